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
  by_name_[spec.name] = index;
  specs_.push_back(std::move(spec));
  return index;
}

void ParameterArena::allocate(Backend& backend, DType compute_dtype) {
  if (allocated()) throw Error("parameter arena allocated twice");
  if (compute_dtype != DType::f32 && compute_dtype != DType::bf16 && compute_dtype != DType::f16)
    throw Error("parameter arena: compute dtype must be f32, bf16 or f16, not " +
                std::string(dtype_name(compute_dtype)));
  compute_dtype_ = compute_dtype;
  params_ = Tensor::empty(&backend, {numel_}, DType::f32);
  grads_ = Tensor::empty(&backend, {numel_}, DType::f32);
  backend.kernels.fill(params_, 0.0f);
  backend.kernels.fill(grads_, 0.0f);
  if (compute_dtype_ != DType::f32) {
    weights_ = Tensor::empty(&backend, {numel_}, compute_dtype_);
    backend.kernels.fill(weights_, 0.0f);
  }
  weights_stale_ = true;
}

Tensor ParameterArena::weight(int i) const {
  const auto& s = specs_.at(static_cast<std::size_t>(i));
  const Tensor& all = compute_dtype_ == DType::f32 ? params_ : weights_;
  return all.slice(s.offset, neox::numel(s.shape)).view(s.shape);
}

void ParameterArena::refresh_weights(Backend& backend) {
  if (compute_dtype_ == DType::f32 || !weights_stale_) return;
  backend.kernels.convert(weights_, params_);
  weights_stale_ = false;
}

std::size_t ParameterArena::bytes() const {
  return params_.bytes() + grads_.bytes() + (weights_.defined() ? weights_.bytes() : 0);
}

int ParameterArena::index(const std::string& name) const {
  auto it = by_name_.find(name);
  if (it == by_name_.end()) throw Error("the model has no parameter named '" + name + "'");
  return it->second;
}

bool ParameterArena::contains(const std::string& name) const { return by_name_.count(name) != 0; }

Tensor ParameterArena::param(int i) const {
  const auto& s = specs_.at(static_cast<std::size_t>(i));
  weights_stale_ = true;
  return params_.slice(s.offset, neox::numel(s.shape)).view(s.shape);
}

Tensor ParameterArena::grad(int i) const {
  const auto& s = specs_.at(static_cast<std::size_t>(i));
  return grads_.slice(s.offset, neox::numel(s.shape)).view(s.shape);
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

void ParameterArena::initialize(Backend& backend, std::uint64_t seed) {
  if (!allocated()) throw Error("initialize() before allocate()");
  Tensor host = Tensor::empty(nullptr, {numel_}, DType::f32);
  float* p = host.ptr<float>();
  for (std::size_t i = 0; i < specs_.size(); ++i) {
    const auto& s = specs_[i];
    float* dst = p + s.offset;
    std::int64_t n = neox::numel(s.shape);
    switch (s.init) {
      case InitKind::zeros: std::fill(dst, dst + n, 0.0f); break;
      case InitKind::ones: std::fill(dst, dst + n, 1.0f); break;
      case InitKind::normal: {
        std::uint64_t stream = seed * 0x100000001b3ull + i;
        fill_normal(dst, n, s.init_std, splitmix64(stream));
        break;
      }
    }
  }
  backend.copy_tensor(params_, host);
}

void ParameterArena::zero_grads(Backend& backend) { backend.kernels.fill(grads_, 0.0f); }

}  // namespace neox
