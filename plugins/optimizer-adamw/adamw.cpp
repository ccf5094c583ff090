// SPDX-License-Identifier: Apache-2.0
// optimizer plugin `adamw`: torch.optim.AdamW semantics.
//
// State: exp_avg (m) and exp_avg_sq (v), f32, one element per parameter of
// the arena, on the backend. The learning rate, step number and gradient
// scale come with each step (StepContext); weight decay comes with each
// parameter group. It implements optimizer.type "adamw" and does not
// partition (a training.zero_stage above 0 is refused: that is the zero
// plugin's). Options ([plugins.options.adamw]), each defaulting to the
// run's [optimizer] value (OptimizerContext):
//   beta1, beta2: in [0, 1)
//   eps: in [0, 1]
// The communicator is not used: gradients arrive already averaged.
#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "neox/backend.h"
#include "neox/error.h"
#include "neox/optimizer.h"
#include "neox/options.h"
#include "neox/plugin.h"

namespace neox {
namespace {

constexpr const char* kExpAvg = "exp_avg";
constexpr const char* kExpAvgSq = "exp_avg_sq";

// The saved moments must be usable before they replace the current ones:
// exp_avg finite, exp_avg_sq finite and >= 0 (a negative second moment makes
// its square root NaN, and so every later step). Device tensors are checked
// through a host buffer, a chunk at a time.
void check_moment_values(Backend& backend, const char* optimizer, const char* name, const Tensor& src,
                         bool nonnegative) {
  const std::int64_t n = src.numel();
  if (n > 0 && !src.defined())
    throw Error(std::string("optimizer '") + optimizer + "': load_state: state tensor '" + name + "' is undefined");
  constexpr std::int64_t kChunk = std::int64_t{1} << 20;
  std::vector<float> buffer;
  for (std::int64_t start = 0; start < n; start += kChunk) {
    const std::int64_t count = std::min(kChunk, n - start);
    const float* p = nullptr;
    if (src.device().is_cpu()) {
      p = src.ptr<float>() + start;
    } else {
      buffer.resize(static_cast<std::size_t>(count));
      backend.copy(buffer.data(), Device{}, src.ptr<float>() + start, src.device(),
                   static_cast<std::size_t>(count) * sizeof(float));
      p = buffer.data();
    }
    for (std::int64_t i = 0; i < count; ++i)
      if (!std::isfinite(p[i]) || (nonnegative && p[i] < 0.0f))
        throw Error(std::string("optimizer '") + optimizer + "': load_state: state tensor '" + name + "' element " +
                    std::to_string(start + i) + " is " + std::to_string(p[i]) + " (must be finite" +
                    (nonnegative ? " and >= 0" : "") + "; a corrupted checkpoint)");
  }
}

class AdamW final : public Optimizer {
 public:
  AdamW(double beta1, double beta2, double eps) : beta1_(beta1), beta2_(beta2), eps_(eps) {}

  std::string name() const override { return "adamw"; }

  void init(Backend& backend, Communicator& /*comm*/, const Tensor& params, const Tensor& grads,
            const std::vector<ParamGroup>& groups) override {
    if (!params.defined() && params.numel() > 0) fail("init", "params are undefined");
    if (!grads.defined() && grads.numel() > 0) fail("init", "grads are undefined");
    if (params.dtype() != DType::f32) fail("init", "params must be f32, got " + params.str());
    if (grads.dtype() != DType::f32) fail("init", "grads must be f32, got " + grads.str());
    if (params.numel() != grads.numel())
      fail("init", "params " + params.str() + " and grads " + grads.str() + " have different element counts");
    if (!backend.kernels.fill || !backend.kernels.adamw_update)
      fail("init",
           "backend '" + backend.name() + "' lacks the fill or adamw_update kernel (register its kernels first)");
    if (params.numel() > 0 && (params.device() != backend.device() || grads.device() != backend.device()))
      fail("init", "params " + params.str() + " and grads " + grads.str() + " must be on backend '" + backend.name() +
                       "' (" + device_name(backend.device()) + ")");
    check_groups(groups, params.numel());

    const std::int64_t n = params.numel();
    Tensor m = Tensor::empty(&backend, {n}, DType::f32);
    Tensor v = Tensor::empty(&backend, {n}, DType::f32);
    if (n > 0) {
      backend.kernels.fill(m, 0.0f);
      backend.kernels.fill(v, 0.0f);
    }
    backend_ = &backend;
    params_ = params.numel() > 0 ? params.view({n}) : params;
    grads_ = grads.numel() > 0 ? grads.view({n}) : grads;
    groups_ = groups;
    m_ = std::move(m);
    v_ = std::move(v);
  }

  void step(const StepContext& ctx) override {
    require_init("step");
    if (ctx.step < 1) fail("step", "step number " + std::to_string(ctx.step) + " must be 1 or more (1-based)");
    if (!std::isfinite(ctx.lr) || ctx.lr < 0.0f)
      fail("step", "learning rate " + std::to_string(ctx.lr) + " must be finite and >= 0");
    if (!std::isfinite(ctx.grad_scale)) fail("step", "grad_scale " + std::to_string(ctx.grad_scale) + " is not finite");
    AdamWParams p;
    p.lr = ctx.lr;
    p.beta1 = static_cast<float>(beta1_);
    p.beta2 = static_cast<float>(beta2_);
    p.eps = static_cast<float>(eps_);
    p.step = ctx.step;
    p.grad_scale = ctx.grad_scale;
    for (const auto& g : groups_) {
      if (g.count == 0) continue;
      p.weight_decay = g.weight_decay;
      Tensor param = params_.slice(g.offset, g.count);
      Tensor grad = grads_.slice(g.offset, g.count);
      Tensor m = m_.slice(g.offset, g.count);
      Tensor v = v_.slice(g.offset, g.count);
      backend_->kernels.adamw_update(param, grad, m, v, p);
    }
  }

  TensorMap state() override {
    require_init("state");
    return {{kExpAvg, m_}, {kExpAvgSq, v_}};
  }

  void load_state(const TensorMap& state) override {
    require_init("load_state");
    // Check everything before copying anything.
    for (const auto& [name, t] : state)
      if (name != kExpAvg && name != kExpAvgSq)
        fail("load_state", "unknown state tensor '" + name + "' (expected '" + kExpAvg + "' and '" + kExpAvgSq + "')");
    const std::pair<const char*, Tensor*> targets[] = {{kExpAvg, &m_}, {kExpAvgSq, &v_}};
    for (const auto& [name, dst] : targets) {
      auto it = state.find(name);
      if (it == state.end()) fail("load_state", std::string("state tensor '") + name + "' is missing");
      const Tensor& src = it->second;
      if (src.dtype() != DType::f32 || src.numel() != dst->numel())
        fail("load_state",
             std::string("state tensor '") + name + "': expected f32" + shape_str(dst->shape()) + ", got " + src.str());
      if (src.numel() > 0 && !src.defined())
        fail("load_state", std::string("state tensor '") + name + "' is undefined");
    }
    check_moment_values(*backend_, "adamw", kExpAvg, state.at(kExpAvg), false);
    check_moment_values(*backend_, "adamw", kExpAvgSq, state.at(kExpAvgSq), true);
    for (const auto& [name, dst] : targets) {
      const Tensor& src = state.at(name);
      if (dst->bytes() > 0 && dst->data() != src.data())
        backend_->copy(dst->data(), dst->device(), src.data(), src.device(), dst->bytes());
    }
  }

  std::int64_t state_bytes() const override { return static_cast<std::int64_t>(m_.bytes() + v_.bytes()); }

 private:
  [[noreturn]] static void fail(const char* where, const std::string& problem) {
    throw Error(std::string("optimizer 'adamw': ") + where + ": " + problem);
  }

  void require_init(const char* where) const {
    if (!backend_) fail(where, "called before init()");
  }

  static void check_groups(const std::vector<ParamGroup>& groups, std::int64_t n) {
    std::vector<std::pair<std::int64_t, std::int64_t>> ranges;
    for (std::size_t i = 0; i < groups.size(); ++i) {
      const auto& g = groups[i];
      std::string which = "parameter group " + std::to_string(i) + " [" + std::to_string(g.offset) + ", " +
                          std::to_string(g.offset + g.count) + ")";
      if (g.offset < 0 || g.count < 0 || g.offset > n || g.count > n - g.offset)
        fail("init", which + " is outside the arena of " + std::to_string(n) + " elements");
      if (!std::isfinite(g.weight_decay) || g.weight_decay < 0.0f)
        fail("init", which + ": weight decay " + std::to_string(g.weight_decay) + " must be finite and >= 0");
      if (g.count > 0) ranges.emplace_back(g.offset, g.offset + g.count);
    }
    std::sort(ranges.begin(), ranges.end());
    for (std::size_t i = 1; i < ranges.size(); ++i)
      if (ranges[i].first < ranges[i - 1].second)
        fail("init", "parameter groups overlap at element " + std::to_string(ranges[i].first) +
                         " (each parameter may be updated by one group only)");
  }

  double beta1_, beta2_, eps_;
  Backend* backend_ = nullptr;
  Tensor params_, grads_, m_, v_;
  std::vector<ParamGroup> groups_;
};

double beta_option(const Options& options, const char* key, double def) {
  double b = options.get_double(key, def, 0.0, 1.0);
  if (!(b < 1.0)) throw Error(options.where(key) + ": must be below 1 (got " + std::to_string(b) + ")");
  return b;
}

Optimizer* make_adamw(const Options& options, const OptimizerContext& context) {
  if (context.type != "adamw")
    throw Error(context.config + ": optimizer.type \"" + context.type + "\": this plugin implements \"adamw\" only");
  if (context.zero_stage != 0)
    throw Error(context.config + ": training.zero_stage = " + std::to_string(context.zero_stage) +
                ": adamw does not partition; ZeRO stages are plugins.zero_optimizer's");
  double beta1 = beta_option(options, "beta1", context.beta1);
  double beta2 = beta_option(options, "beta2", context.beta2);
  double eps = options.get_double("eps", context.eps, 0.0, 1.0);
  options.reject_unknown();
  return new AdamW(beta1, beta2, eps);
}

}  // namespace
}  // namespace neox

NEOX_PLUGIN(optimizer, "adamw", "1.0", "PyTorch AdamW (decoupled weight decay) over the parameter arena",
            &neox::make_adamw)
