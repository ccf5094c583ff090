// SPDX-License-Identifier: Apache-2.0
// The `adamw` optimizer plugin against a float64 re-implementation of
// torch.optim.AdamW, on a small host test backend (always) and on the cpu
// backend plugin (when it is built).
#include <gtest/gtest.h>

#include "test_support.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <new>
#include <random>
#include <string>
#include <vector>

#include "neox/backend.h"
#include "neox/communicator.h"
#include "neox/error.h"
#include "neox/optimizer.h"
#include "neox/options.h"
#include "neox/registry.h"

namespace {

using neox::AdamWParams;
using neox::DType;
using neox::ParamGroup;
using neox::StepContext;
using neox::Tensor;

using neox::test::error_of;

// A minimal host backend with the two kernels the optimizer needs. Its
// adamw_update follows the formula in kernels.h, evaluated in double per
// element and stored as f32. It records every adamw_update call.
class TestHostBackend final : public neox::Backend {
 public:
  struct Call {
    std::int64_t numel;
    const void* param;
    AdamWParams p;
  };
  std::vector<Call> calls;

  std::string name() const override { return "test-host"; }
  neox::Device device() const override { return {}; }
  void* allocate(std::size_t bytes) override { return ::operator new(bytes == 0 ? 1 : bytes, std::align_val_t(64)); }
  void deallocate(void* ptr, std::size_t) noexcept override { ::operator delete(ptr, std::align_val_t(64)); }
  void copy(void* dst, neox::Device, const void* src, neox::Device, std::size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
  }
  void synchronize() override {}
  void register_kernels(neox::Kernels& k) override {
    k.fill = [](Tensor& t, float value) { std::fill_n(t.ptr<float>(), t.numel(), value); };
    k.adamw_update = [this](Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWParams& a) {
      if (grad.numel() != param.numel() || m.numel() != param.numel() || v.numel() != param.numel())
        throw neox::Error("adamw_update (test-host): sizes differ");
      calls.push_back({param.numel(), param.data(), a});
      const double b1 = a.beta1, b2 = a.beta2, lr = a.lr, wd = a.weight_decay, eps = a.eps;
      const double bc1 = 1.0 - std::pow(b1, static_cast<double>(a.step));
      const double bc2 = 1.0 - std::pow(b2, static_cast<double>(a.step));
      float* p = param.ptr<float>();
      float* mm = m.ptr<float>();
      float* vv = v.ptr<float>();
      const float* g = grad.ptr<float>();
      for (std::int64_t i = 0; i < param.numel(); ++i) {
        double gi = static_cast<double>(g[i]) * a.grad_scale;
        double pi = p[i] * (1.0 - lr * wd);
        double mi = b1 * mm[i] + (1.0 - b1) * gi;
        double vi = b2 * vv[i] + (1.0 - b2) * gi * gi;
        pi -= (lr / bc1) * mi / (std::sqrt(vi) / std::sqrt(bc2) + eps);
        p[i] = static_cast<float>(pi);
        mm[i] = static_cast<float>(mi);
        vv[i] = static_cast<float>(vi);
      }
    };
  }
};

// torch.optim.AdamW (maximize=False, amsgrad=False) in float64 for one
// parameter group, with the gradient scaled first as StepContext says.
struct ReferenceAdamW {
  double beta1, beta2, eps;
  std::vector<double> p, m, v;
  void step(const std::vector<double>& grad, std::int64_t begin, std::int64_t end, double lr, double weight_decay,
            std::int64_t t, double grad_scale) {
    const double bc1 = 1.0 - std::pow(beta1, static_cast<double>(t));
    const double bc2 = 1.0 - std::pow(beta2, static_cast<double>(t));
    for (std::int64_t i = begin; i < end; ++i) {
      const double g = grad[i] * grad_scale;
      p[i] *= 1.0 - lr * weight_decay;
      m[i] = beta1 * m[i] + (1.0 - beta1) * g;  // exp_avg.lerp_(grad, 1 - beta1)
      v[i] = beta2 * v[i] + (1.0 - beta2) * g * g;
      const double step_size = lr / bc1;
      const double denom = std::sqrt(v[i]) / std::sqrt(bc2) + eps;
      p[i] -= step_size * m[i] / denom;
    }
  }
};

class DummyComm final : public neox::Communicator {
 public:
  std::string name() const override { return "dummy"; }
  int rank() const override { return 0; }
  int size() const override { return 1; }
  int local_rank() const override { return 0; }
  void all_reduce(Tensor&, neox::ReduceOp) override { used = true; }
  void reduce_scatter(const Tensor&, Tensor&, neox::ReduceOp) override { used = true; }
  void all_gather(const Tensor&, Tensor&) override { used = true; }
  void broadcast(Tensor&, int) override { used = true; }
  void send(const Tensor&, int, int) override { used = true; }
  void recv(Tensor&, int, int) override { used = true; }
  void barrier() override { used = true; }
  bool used = false;
};

constexpr std::int64_t kN = 1000;
// Three groups (decay, no decay, decay) and a tail [900, 1000) in no group.
const std::vector<ParamGroup> kGroups = {{0, 300, 0.1f}, {300, 50, 0.0f}, {350, 550, 0.1f}};

std::vector<float> random_values(std::uint32_t seed, std::int64_t n, float lo, float hi, bool random_sign) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> out(static_cast<std::size_t>(n));
  for (auto& x : out) {
    x = dist(gen);
    if (random_sign && (gen() & 1)) x = -x;
  }
  return out;
}

std::vector<float> to_vector(neox::Backend& backend, const Tensor& t) {
  Tensor h = backend.to_host(t);
  return std::vector<float>(h.ptr<float>(), h.ptr<float>() + h.numel());
}

void upload(neox::Backend& backend, Tensor& dst, const std::vector<float>& values) {
  backend.copy(dst.data(), dst.device(), values.data(), neox::Device{}, values.size() * sizeof(float));
}

neox::Options adamw_options(double beta1, double beta2, double eps) {
  neox::Options o("plugins.options.adamw");
  o.set("beta1", beta1);
  o.set("beta2", beta2);
  o.set("eps", eps);
  return o;
}

// The learning rate schedule and gradient scales of the test steps.
float lr_at(std::int64_t t) { return 1e-2f / static_cast<float>(t); }
float scale_at(std::int64_t t) { return t % 2 ? 0.5f : 0.8f; }

class AdamW : public ::testing::Test {
 protected:
  void SetUp() override { registry_ = std::make_unique<neox::PluginRegistry>(); }

  // The cpu backend plugin, or null when it is not built (yet).
  std::shared_ptr<neox::Backend> cpu_backend() {
    namespace fs = std::filesystem;
    if (!fs::exists(fs::path(neox::test::build_plugin_dir()) / "neox_backend_cpu.so")) return nullptr;
    return registry_->make_backend("cpu", {}, {});
  }

  std::shared_ptr<neox::Optimizer> make(const neox::Options& options,
                                        const neox::OptimizerContext& context = neox::OptimizerContext()) {
    return registry_->make_optimizer("adamw", options, context);
  }

  // Runs steps [first, last] of the test problem, checking against the
  // reference after each.
  void compare_with_reference(neox::Backend& backend) {
    const double b1 = 0.9f, b2 = 0.95f, eps = 1e-8f;  // the kernel gets f32 hyperparameters
    auto opt = make(adamw_options(0.9, 0.95, 1e-8));
    Tensor params = Tensor::empty(&backend, {kN}, DType::f32);
    Tensor grads = Tensor::empty(&backend, {kN}, DType::f32);
    auto p0 = random_values(1, kN, 0.1f, 1.0f, true);
    upload(backend, params, p0);
    DummyComm comm;
    opt->init(backend, comm, params, grads, kGroups);
    EXPECT_EQ(opt->state_bytes(), 2 * kN * 4);

    ReferenceAdamW ref{b1,
                       b2,
                       eps,
                       std::vector<double>(p0.begin(), p0.end()),
                       std::vector<double>(kN, 0.0),
                       std::vector<double>(kN, 0.0)};
    double worst_p = 0, worst_m = 0, worst_v = 0;
    for (std::int64_t t = 1; t <= 6; ++t) {
      auto g = random_values(100 + static_cast<std::uint32_t>(t), kN, 0.0f, 2.0f, true);
      upload(backend, grads, g);
      opt->step(StepContext{lr_at(t), t, scale_at(t)});
      std::vector<double> gd(g.begin(), g.end());
      for (const auto& grp : kGroups)
        ref.step(gd, grp.offset, grp.offset + grp.count, lr_at(t), grp.weight_decay, t, scale_at(t));

      auto p = to_vector(backend, params);
      auto state = opt->state();
      auto m = to_vector(backend, state.at("exp_avg"));
      auto v = to_vector(backend, state.at("exp_avg_sq"));
      double max_m = 0, max_v = 0;
      for (std::int64_t i = 0; i < kN; ++i) {
        max_m = std::max(max_m, std::abs(ref.m[i]));
        max_v = std::max(max_v, std::abs(ref.v[i]));
      }
      for (std::int64_t i = 0; i < kN; ++i) {
        worst_p = std::max(worst_p, std::abs(p[i] - ref.p[i]) / std::max(std::abs(ref.p[i]), 1e-1));
        worst_m = std::max(worst_m, std::abs(m[i] - ref.m[i]) / max_m);
        worst_v = std::max(worst_v, std::abs(v[i] - ref.v[i]) / max_v);
      }
      for (std::int64_t i = 900; i < kN; ++i) ASSERT_EQ(p[i], p0[i]) << "element in no group changed";
    }
    EXPECT_LT(worst_p, 1e-6);
    EXPECT_LT(worst_m, 1e-6);
    EXPECT_LT(worst_v, 1e-6);
    std::printf("[ adamw ] %s: worst relative error params %.3g, exp_avg %.3g, exp_avg_sq %.3g\n",
                backend.name().c_str(), worst_p, worst_m, worst_v);
    EXPECT_FALSE(comm.used) << "adamw must not communicate";
  }

  // Steps 1..3 on one optimizer, then save state and params, load them into a
  // fresh optimizer, and run steps 4..6 on both: results must be bit-equal.
  void resume_is_bit_exact(neox::Backend& backend, bool host_copy) {
    auto options = adamw_options(0.9, 0.999, 1e-8);
    DummyComm comm;
    auto a = make(options);
    Tensor pa = Tensor::empty(&backend, {kN}, DType::f32);
    Tensor ga = Tensor::empty(&backend, {kN}, DType::f32);
    upload(backend, pa, random_values(7, kN, 0.1f, 1.0f, true));
    a->init(backend, comm, pa, ga, kGroups);
    auto grad_at = [](std::int64_t t) {
      return random_values(200 + static_cast<std::uint32_t>(t), kN, 0.0f, 1.0f, true);
    };
    for (std::int64_t t = 1; t <= 3; ++t) {
      upload(backend, ga, grad_at(t));
      a->step({lr_at(t), t, scale_at(t)});
    }
    neox::TensorMap saved;
    for (auto& [name, t] : a->state()) saved[name] = host_copy ? backend.to_host(t) : t;
    auto b = make(options);
    Tensor pb = Tensor::empty(&backend, {kN}, DType::f32);
    Tensor gb = Tensor::empty(&backend, {kN}, DType::f32);
    backend.copy_tensor(pb, pa);
    b->init(backend, comm, pb, gb, kGroups);
    b->load_state(saved);
    for (std::int64_t t = 4; t <= 6; ++t) {
      auto g = grad_at(t);
      upload(backend, ga, g);
      upload(backend, gb, g);
      a->step({lr_at(t), t, scale_at(t)});
      b->step({lr_at(t), t, scale_at(t)});
    }
    auto sa = a->state(), sb = b->state();
    EXPECT_EQ(to_vector(backend, pa), to_vector(backend, pb));
    EXPECT_EQ(to_vector(backend, sa.at("exp_avg")), to_vector(backend, sb.at("exp_avg")));
    EXPECT_EQ(to_vector(backend, sa.at("exp_avg_sq")), to_vector(backend, sb.at("exp_avg_sq")));
    // The state is the optimizer's own, not the tensors it was loaded from.
    EXPECT_NE(sb.at("exp_avg").data(), saved.at("exp_avg").data());
  }

  std::unique_ptr<neox::PluginRegistry> registry_;
};

TEST_F(AdamW, MatchesTorchReferenceOnTestBackend) {
  TestHostBackend backend;
  backend.register_kernels(backend.kernels);
  compare_with_reference(backend);
}

TEST_F(AdamW, MatchesTorchReferenceOnCpuBackend) {
  auto backend = cpu_backend();
  if (!backend) GTEST_SKIP() << "neox_backend_cpu.so is not built";
  compare_with_reference(*backend);
}

TEST_F(AdamW, CallsTheKernelOncePerGroupWithItsSettings) {
  TestHostBackend backend;
  backend.register_kernels(backend.kernels);
  auto opt = make(adamw_options(0.8, 0.99, 1e-6));
  Tensor params = Tensor::empty(&backend, {kN}, DType::f32);
  Tensor grads = Tensor::empty(&backend, {kN}, DType::f32);
  backend.kernels.fill(params, 1.0f);
  backend.kernels.fill(grads, 1.0f);
  DummyComm comm;
  std::vector<ParamGroup> groups = kGroups;
  groups.push_back({900, 0, 0.5f});  // empty groups are skipped
  opt->init(backend, comm, params, grads, groups);
  opt->step({0.25f, 7, 0.125f});
  ASSERT_EQ(backend.calls.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) {
    const auto& c = backend.calls[i];
    EXPECT_EQ(c.numel, kGroups[i].count);
    EXPECT_EQ(c.param, params.ptr<float>() + kGroups[i].offset);
    EXPECT_EQ(c.p.weight_decay, kGroups[i].weight_decay);
    EXPECT_EQ(c.p.lr, 0.25f);
    EXPECT_EQ(c.p.step, 7);
    EXPECT_EQ(c.p.grad_scale, 0.125f);
    EXPECT_EQ(c.p.beta1, 0.8f);
    EXPECT_EQ(c.p.beta2, 0.99f);
    EXPECT_EQ(c.p.eps, 1e-6f);
  }
}

TEST_F(AdamW, DefaultHyperparameters) {
  TestHostBackend backend;
  backend.register_kernels(backend.kernels);
  auto opt = make(neox::Options("plugins.options.adamw"));
  EXPECT_EQ(opt->name(), "adamw");
  Tensor params = Tensor::empty(&backend, {4}, DType::f32);
  Tensor grads = Tensor::empty(&backend, {4}, DType::f32);
  backend.kernels.fill(params, 0.0f);
  backend.kernels.fill(grads, 0.0f);
  DummyComm comm;
  opt->init(backend, comm, params, grads, {{0, 4, 0.0f}});
  opt->step({1e-3f, 1, 1.0f});
  ASSERT_EQ(backend.calls.size(), 1u);
  EXPECT_EQ(backend.calls[0].p.beta1, 0.9f);
  EXPECT_EQ(backend.calls[0].p.beta2, 0.999f);
  EXPECT_EQ(backend.calls[0].p.eps, 1e-8f);
}

TEST_F(AdamW, StateStartsAtZero) {
  TestHostBackend backend;
  backend.register_kernels(backend.kernels);
  auto opt = make(neox::Options("plugins.options.adamw"));
  Tensor params = Tensor::empty(&backend, {kN}, DType::f32);
  Tensor grads = Tensor::empty(&backend, {kN}, DType::f32);
  DummyComm comm;
  opt->init(backend, comm, params, grads, kGroups);
  auto state = opt->state();
  ASSERT_EQ(state.size(), 2u);
  for (const char* name : {"exp_avg", "exp_avg_sq"}) {
    const Tensor& t = state.at(name);
    EXPECT_EQ(t.dtype(), DType::f32);
    EXPECT_EQ(t.numel(), kN);
    for (float x : to_vector(backend, t)) ASSERT_EQ(x, 0.0f) << name;
  }
  EXPECT_EQ(opt->state_bytes(), 8 * kN);
}

TEST_F(AdamW, ResumeFromHostStateIsBitExact) {
  TestHostBackend backend;
  backend.register_kernels(backend.kernels);
  resume_is_bit_exact(backend, true);
}

TEST_F(AdamW, ResumeFromDeviceStateIsBitExact) {
  TestHostBackend backend;
  backend.register_kernels(backend.kernels);
  resume_is_bit_exact(backend, false);
}

TEST_F(AdamW, ResumeOnCpuBackendIsBitExact) {
  auto backend = cpu_backend();
  if (!backend) GTEST_SKIP() << "neox_backend_cpu.so is not built";
  resume_is_bit_exact(*backend, true);
}

TEST_F(AdamW, LoadStateChecksNamesAndSizes) {
  TestHostBackend backend;
  backend.register_kernels(backend.kernels);
  auto opt = make(neox::Options("plugins.options.adamw"));
  Tensor params = Tensor::empty(&backend, {kN}, DType::f32);
  Tensor grads = Tensor::empty(&backend, {kN}, DType::f32);
  DummyComm comm;
  opt->init(backend, comm, params, grads, kGroups);

  Tensor good = Tensor::zeros_host({kN}, DType::f32);
  Tensor ones = Tensor::zeros_host({kN}, DType::f32);
  std::fill_n(ones.ptr<float>(), kN, 1.0f);
  Tensor short_t = Tensor::zeros_host({kN - 1}, DType::f32);
  auto msg = error_of([&] { opt->load_state({{"exp_avg", ones}, {"exp_avg_sq", short_t}}); });
  EXPECT_NE(msg.find("exp_avg_sq"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[1000]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[999]"), std::string::npos) << msg;
  // Nothing was copied: the check comes before any copy.
  for (float x : to_vector(backend, opt->state().at("exp_avg"))) ASSERT_EQ(x, 0.0f);

  Tensor f64 = Tensor::zeros_host({kN}, DType::f64);
  msg = error_of([&] { opt->load_state({{"exp_avg", f64}, {"exp_avg_sq", good}}); });
  EXPECT_NE(msg.find("'exp_avg'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("f64[1000]"), std::string::npos) << msg;

  msg = error_of([&] { opt->load_state({{"exp_avg", good}}); });
  EXPECT_NE(msg.find("'exp_avg_sq' is missing"), std::string::npos) << msg;

  msg = error_of([&] { opt->load_state({{"exp_avg", good}, {"exp_avg_sq", good}, {"master", good}}); });
  EXPECT_NE(msg.find("unknown state tensor 'master'"), std::string::npos) << msg;

  // A 2-D tensor with the right element count is accepted.
  opt->load_state({{"exp_avg", ones.view({10, 100})}, {"exp_avg_sq", good}});
  for (float x : to_vector(backend, opt->state().at("exp_avg"))) ASSERT_EQ(x, 1.0f);
}

TEST_F(AdamW, CallsBeforeInitAreErrors) {
  auto opt = make(neox::Options("plugins.options.adamw"));
  EXPECT_NE(error_of([&] { opt->step({1e-3f, 1, 1.0f}); }).find("before init"), std::string::npos);
  EXPECT_NE(error_of([&] { opt->state(); }).find("before init"), std::string::npos);
  EXPECT_NE(error_of([&] { opt->load_state({}); }).find("before init"), std::string::npos);
  EXPECT_EQ(opt->state_bytes(), 0);
}

TEST_F(AdamW, InitChecksArenaAndGroups) {
  TestHostBackend backend;
  backend.register_kernels(backend.kernels);
  DummyComm comm;
  Tensor params = Tensor::empty(&backend, {kN}, DType::f32);
  Tensor grads = Tensor::empty(&backend, {kN}, DType::f32);
  auto opt = make(neox::Options("plugins.options.adamw"));
  auto msg = error_of([&] { opt->init(backend, comm, params, grads, {{900, 101, 0.0f}}); });
  EXPECT_NE(msg.find("outside the arena"), std::string::npos) << msg;
  msg = error_of([&] { opt->init(backend, comm, params, grads, {{0, 500, 0.0f}, {499, 10, 0.1f}}); });
  EXPECT_NE(msg.find("overlap"), std::string::npos) << msg;
  msg = error_of([&] { opt->init(backend, comm, params, grads, {{0, 10, -0.1f}}); });
  EXPECT_NE(msg.find("weight decay"), std::string::npos) << msg;
  Tensor short_grads = Tensor::empty(&backend, {kN - 1}, DType::f32);
  msg = error_of([&] { opt->init(backend, comm, params, short_grads, kGroups); });
  EXPECT_NE(msg.find("different element counts"), std::string::npos) << msg;
  Tensor bf16 = Tensor::empty(&backend, {kN}, DType::bf16);
  msg = error_of([&] { opt->init(backend, comm, bf16, grads, kGroups); });
  EXPECT_NE(msg.find("must be f32"), std::string::npos) << msg;

  opt->init(backend, comm, params, grads, kGroups);
  msg = error_of([&] { opt->step({1e-3f, 0, 1.0f}); });
  EXPECT_NE(msg.find("step number 0"), std::string::npos) << msg;
  msg = error_of([&] { opt->step({-1.0f, 1, 1.0f}); });
  EXPECT_NE(msg.find("learning rate"), std::string::npos) << msg;
}

TEST_F(AdamW, OptionsAreValidated) {
  neox::Options bad_beta("plugins.options.adamw");
  bad_beta.set("beta2", 1.0);
  auto msg = error_of([&] { make(bad_beta); });
  EXPECT_NE(msg.find("optimizer plugin 'adamw'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("plugins.options.adamw.beta2"), std::string::npos) << msg;

  neox::Options negative("plugins.options.adamw");
  negative.set("beta1", -0.5);
  msg = error_of([&] { make(negative); });
  EXPECT_NE(msg.find("plugins.options.adamw.beta1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("out of range"), std::string::npos) << msg;

  neox::Options wrong_type("plugins.options.adamw");
  wrong_type.set("eps", std::string("tiny"));
  msg = error_of([&] { make(wrong_type); });
  EXPECT_NE(msg.find("plugins.options.adamw.eps"), std::string::npos) << msg;

  neox::Options unknown("plugins.options.adamw");
  unknown.set("lr", 0.1);  // the learning rate comes with each step
  msg = error_of([&] { make(unknown); });
  EXPECT_NE(msg.find("plugins.options.adamw.lr"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unknown option"), std::string::npos) << msg;
}

// The run's [optimizer] and [training] settings reach the plugin in its
// OptimizerContext: the constants are the defaults its options override,
// and it refuses an algorithm or a ZeRO stage it does not implement.
TEST_F(AdamW, TakesTheRunsSettingsAndRefusesWhatItDoesNotImplement) {
  TestHostBackend backend;
  backend.register_kernels(backend.kernels);
  neox::OptimizerContext context;
  context.config = "t.toml";
  context.beta1 = 0.8;
  context.beta2 = 0.95;
  context.eps = 1e-6;
  neox::Options options("plugins.options.adamw");
  options.set("beta2", 0.9);  // the plugin's table wins
  auto opt = make(options, context);
  Tensor params = Tensor::empty(&backend, {4}, DType::f32);
  Tensor grads = Tensor::empty(&backend, {4}, DType::f32);
  backend.kernels.fill(params, 0.0f);
  backend.kernels.fill(grads, 0.0f);
  DummyComm comm;
  opt->init(backend, comm, params, grads, {{0, 4, 0.0f}});
  opt->step({1e-3f, 1, 1.0f});
  ASSERT_EQ(backend.calls.size(), 1u);
  EXPECT_EQ(backend.calls[0].p.beta1, 0.8f);
  EXPECT_EQ(backend.calls[0].p.beta2, 0.9f);
  EXPECT_EQ(backend.calls[0].p.eps, 1e-6f);

  neox::OptimizerContext sgd = context;
  sgd.type = "sgd";
  std::string msg = error_of([&] { make(neox::Options("plugins.options.adamw"), sgd); });
  EXPECT_NE(msg.find("t.toml: optimizer.type \"sgd\": this plugin implements \"adamw\" only"), std::string::npos)
      << msg;
  neox::OptimizerContext zero = context;
  zero.zero_stage = 2;
  msg = error_of([&] { make(neox::Options("plugins.options.adamw"), zero); });
  EXPECT_NE(msg.find("t.toml: training.zero_stage = 2: adamw does not partition"), std::string::npos) << msg;
}

}  // namespace
