// SPDX-License-Identifier: Apache-2.0
#include "neox/arena.h"

#include <cmath>
#include <vector>

#include "neox/backend.h"
#include "neox/error.h"

namespace neox {

int ParameterArena::add(ParameterSpec spec) {
  if (allocated()) throw Error("parameter '" + spec.name + "' added after the arena was allocated");
  if (by_name_.count(spec.name)) throw Error("parameter '" + spec.name + "' declared twice");
  spec.offset = numel_;
  numel_ += neox::numel(spec.shape);
  int index = static_cast<int>(specs_.size());
  unit_of_.push_back(static_cast<int>(units_.size()));
  by_name_[spec.name] = index;
  specs_.push_back(std::move(spec));
  return index;
}

void ParameterArena::close_unit() {
  if (allocated()) throw Error("parameter arena: close_unit() after allocate()");
  if (numel_ == unit_start_) return;  // nothing added since the last unit
  units_.push_back({unit_start_, numel_ - unit_start_});
  unit_start_ = numel_;
}

void ParameterArena::allocate(Backend& backend, DType compute_dtype, ArenaPartitioning partitioning) {
  if (allocated()) throw Error("parameter arena allocated twice");
  close_unit();
  backend_ = &backend;
  allocated_ = true;
  if (compute_dtype != DType::f32 && compute_dtype != DType::bf16 && compute_dtype != DType::f16)
    throw Error("parameter arena: compute dtype must be f32, bf16 or f16, not " +
                std::string(dtype_name(compute_dtype)));
  compute_dtype_ = compute_dtype;
  unit_buffers_.resize(units_.size());
  params_partitioned_ = partitioning.params;
  grads_partitioned_ = partitioning.grads;
  if (!params_partitioned_) {
    params_ = Tensor::empty(&backend, {numel_}, DType::f32);
    backend.kernels.fill(params_, 0.0f);
    if (compute_dtype_ != DType::f32) {
      weights_ = Tensor::empty(&backend, {numel_}, compute_dtype_);
      backend.kernels.fill(weights_, 0.0f);
    }
  }
  if (!grads_partitioned_) {
    grads_ = Tensor::empty(&backend, {numel_}, DType::f32);
    backend.kernels.fill(grads_, 0.0f);
  }
  weights_stale_ = true;
  note_bytes();
}

namespace {
[[noreturn]] void not_gathered(const ParameterSpec& s, int unit) {
  throw Error("parameter '" + s.name + "' (unit " + std::to_string(unit) +
              ") is partitioned across ranks and not gathered: the model uses it outside a ParameterHooks "
              "gather()/release() pair");
}
}  // namespace

Tensor ParameterArena::weight(int i) const {
  const auto& s = specs_.at(static_cast<std::size_t>(i));
  if (params_partitioned_) {
    const int u = unit_of(i);
    const UnitBuffers& b = unit_buffers_[static_cast<std::size_t>(u)];
    if (!b.gathered) not_gathered(s, u);
    const Tensor& all = compute_dtype_ == DType::f32 ? b.params : b.weights;
    return all.slice(s.offset - units_[static_cast<std::size_t>(u)].offset, neox::numel(s.shape)).view(s.shape);
  }
  const Tensor& all = compute_dtype_ == DType::f32 ? params_ : weights_;
  return all.slice(s.offset, neox::numel(s.shape)).view(s.shape);
}

void ParameterArena::refresh_weights(Backend& backend) {
  if (params_partitioned_) return;  // each unit's copy is made when it is gathered
  if (compute_dtype_ == DType::f32 || !weights_stale_) return;
  backend.kernels.convert(weights_, params_);
  weights_stale_ = false;
}

std::size_t ParameterArena::bytes() const {
  std::size_t n = (params_.defined() ? params_.bytes() : 0) + (grads_.defined() ? grads_.bytes() : 0) +
                  (weights_.defined() ? weights_.bytes() : 0);
  for (const auto& b : unit_buffers_)
    for (const Tensor* t : {&b.params, &b.weights, &b.grads})
      if (t->defined()) n += t->bytes();
  return n;
}

int ParameterArena::index(const std::string& name) const {
  auto it = by_name_.find(name);
  if (it == by_name_.end()) throw Error("the model has no parameter named '" + name + "'");
  return it->second;
}

bool ParameterArena::contains(const std::string& name) const { return by_name_.count(name) != 0; }

Tensor ParameterArena::param(int i) const {
  const auto& s = specs_.at(static_cast<std::size_t>(i));
  if (params_partitioned_) {
    const int u = unit_of(i);
    const UnitBuffers& b = unit_buffers_[static_cast<std::size_t>(u)];
    if (!b.gathered) not_gathered(s, u);
    return b.params.slice(s.offset - units_[static_cast<std::size_t>(u)].offset, neox::numel(s.shape)).view(s.shape);
  }
  weights_stale_ = true;
  return params_.slice(s.offset, neox::numel(s.shape)).view(s.shape);
}

Tensor ParameterArena::grad(int i) const {
  const auto& s = specs_.at(static_cast<std::size_t>(i));
  if (grads_partitioned_) {
    const int u = unit_of(i);
    return ensure_unit_grads(u)
        .slice(s.offset - units_[static_cast<std::size_t>(u)].offset, neox::numel(s.shape))
        .view(s.shape);
  }
  return grads_.slice(s.offset, neox::numel(s.shape)).view(s.shape);
}

// ---------------------------------------------------------------- partitioning

void ParameterArena::check_unit(int unit, const char* op) const {
  if (!allocated()) throw Error(std::string("parameter arena: ") + op + " before allocate()");
  if (unit < 0 || unit >= static_cast<int>(units_.size()))
    throw Error(std::string("parameter arena: ") + op + ": unit " + std::to_string(unit) + " is not in [0, " +
                std::to_string(units_.size()) + ")");
}

void ParameterArena::partition(bool params, bool grads) {
  if (!allocated()) throw Error("parameter arena: partition() before allocate()");
  unit_buffers_.resize(units_.size());
  if (params && !params_partitioned_) {
    params_partitioned_ = true;
    params_ = Tensor();
    weights_ = Tensor();
  }
  if (grads && !grads_partitioned_) {
    grads_partitioned_ = true;
    grads_ = Tensor();
  }
}

Tensor ParameterArena::unit_params(int unit) {
  check_unit(unit, "unit_params");
  const ParamRange& r = units_[static_cast<std::size_t>(unit)];
  if (!params_partitioned_) {
    weights_stale_ = true;
    return params_.slice(r.offset, r.count);
  }
  UnitBuffers& b = unit_buffers_[static_cast<std::size_t>(unit)];
  if (!b.params.defined()) {
    b.params = Tensor::empty(backend_, {r.count}, DType::f32);
    note_bytes();
  }
  return b.params;
}

void ParameterArena::unit_params_ready(int unit) {
  check_unit(unit, "unit_params_ready");
  if (!params_partitioned_) return;
  UnitBuffers& b = unit_buffers_[static_cast<std::size_t>(unit)];
  if (!b.params.defined())
    throw Error("parameter arena: unit_params_ready(" + std::to_string(unit) + ") before unit_params()");
  if (compute_dtype_ != DType::f32) {
    if (!b.weights.defined()) {
      b.weights = Tensor::empty(backend_, {b.params.numel()}, compute_dtype_);
      note_bytes();
    }
    backend_->kernels.convert(b.weights, b.params);
  }
  b.gathered = true;
}

bool ParameterArena::unit_gathered(int unit) const {
  check_unit(unit, "unit_gathered");
  return !params_partitioned_ || unit_buffers_[static_cast<std::size_t>(unit)].gathered;
}

void ParameterArena::drop_unit_params(int unit) {
  check_unit(unit, "drop_unit_params");
  if (!params_partitioned_) return;
  UnitBuffers& b = unit_buffers_[static_cast<std::size_t>(unit)];
  b.params = Tensor();
  b.weights = Tensor();
  b.gathered = false;
}

Tensor& ParameterArena::ensure_unit_grads(int unit) const {
  UnitBuffers& b = unit_buffers_[static_cast<std::size_t>(unit)];
  if (!b.grads.defined()) {
    b.grads = Tensor::empty(backend_, {units_[static_cast<std::size_t>(unit)].count}, DType::f32);
    backend_->kernels.fill(b.grads, 0.0f);
    note_bytes();
  }
  return b.grads;
}

Tensor ParameterArena::unit_grads(int unit) {
  check_unit(unit, "unit_grads");
  if (!grads_partitioned_) {
    const ParamRange& r = units_[static_cast<std::size_t>(unit)];
    return grads_.slice(r.offset, r.count);
  }
  return ensure_unit_grads(unit);
}

bool ParameterArena::has_unit_grads(int unit) const {
  check_unit(unit, "has_unit_grads");
  return !grads_partitioned_ || unit_buffers_[static_cast<std::size_t>(unit)].grads.defined();
}

void ParameterArena::drop_unit_grads(int unit) {
  check_unit(unit, "drop_unit_grads");
  if (grads_partitioned_) unit_buffers_[static_cast<std::size_t>(unit)].grads = Tensor();
}

std::vector<ParamGroup> ParameterArena::groups(float weight_decay) const {
  std::vector<ParamGroup> out;
  for (const auto& s : specs_) {
    float wd = s.decay ? weight_decay : 0.0f;
    std::int64_t n = neox::numel(s.shape);
    if (!out.empty() && out.back().weight_decay == wd && out.back().offset + out.back().count == s.offset)
      out.back().count += n;
    else
      out.push_back({s.offset, n, wd});
  }
  return out;
}

namespace {

// splitmix64: seeds one independent stream per parameter.
std::uint64_t splitmix64(std::uint64_t& x) {
  std::uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Standard normal samples by Box-Muller from splitmix64 uniforms: portable,
// unlike std::normal_distribution, so a seed gives the same model everywhere.
void fill_normal(float* out, std::int64_t n, float std, std::uint64_t seed) {
  std::uint64_t state = seed;
  const double two_pi = 6.283185307179586476925286766559;
  for (std::int64_t i = 0; i < n; i += 2) {
    double u1 = (static_cast<double>(splitmix64(state) >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]
    double u2 = static_cast<double>(splitmix64(state) >> 11) * 0x1.0p-53;
    double r = std::sqrt(-2.0 * std::log(u1));
    out[i] = static_cast<float>(r * std::cos(two_pi * u2) * std);
    if (i + 1 < n) out[i + 1] = static_cast<float>(r * std::sin(two_pi * u2) * std);
  }
}

}  // namespace

Tensor ParameterArena::initial_value(int index, std::uint64_t seed) const {
  const ParameterSpec& s = specs_.at(static_cast<std::size_t>(index));
  Tensor host = Tensor::empty(nullptr, s.shape, DType::f32);
  float* dst = host.ptr<float>();
  const std::int64_t n = neox::numel(s.shape);
  switch (s.init) {
    case InitKind::zeros:
      std::fill(dst, dst + n, 0.0f);
      break;
    case InitKind::ones:
      std::fill(dst, dst + n, 1.0f);
      break;
    case InitKind::normal: {
      std::uint64_t stream = seed * 0x100000001b3ull + static_cast<std::uint64_t>(index);
      fill_normal(dst, n, s.init_std, splitmix64(stream));
      break;
    }
  }
  return host;
}

void ParameterArena::zero_grads(Backend& backend) {
  if (grads_partitioned_) {
    for (auto& b : unit_buffers_) b.grads = Tensor();
    return;
  }
  backend.kernels.fill(grads_, 0.0f);
}

}  // namespace neox
