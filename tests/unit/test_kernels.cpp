// SPDX-License-Identifier: Apache-2.0
// Kernel conformance suite: every operation of neox::Kernels, for every
// backend under test (see backends_under_test), against the float64 reference in
// kernel_reference.h. Each backward is also checked against central finite
// differences of the reference forward (so a wrong reference cannot hide a
// wrong kernel). Inputs are random (seeded), never zero.
//
// Tolerances (relative error ||got - want|| / ||want||):
//   kTol    = 1e-5  backend (f32) vs float64 reference, forward and backward
//   kFdTol  = 1e-7  float64 reference backward vs finite differences (h = 1e-6)
//   kFdTolF = 1e-5  backend backward vs finite differences of the reference
//   AdamW 1e-6, sums 1e-12 (double accumulation), convert / fill: bit-exact.
//   attention_decode: kTol against attention_forward on the whole sequence
//   and against the reference; the k/v it caches are bit-exact copies.
// The bf16 / f16 suite (LowPrecisionTest, below) states its own.
//
// A backend whose factory throws neox::DeviceUnavailable (a GPU backend on a
// machine without one) has every test skipped, with the reason.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "kernel_reference.h"
#include "neox/backend.h"
#include "neox/dtype.h"
#include "neox/error.h"
#include "neox/kernel_contract.h"
#include "neox/kernels.h"
#include "neox/options.h"
#include "neox/registry.h"
#include "neox/tensor.h"
#include "test_support.h"

namespace {

using neox::DType;
using neox::Shape;
using neox::Tensor;
using Vec = std::vector<double>;
using Ids = std::vector<std::int32_t>;
namespace ref = neox::ref;

constexpr double kTol = 1e-5;
constexpr double kFdTol = 1e-7;
constexpr double kFdTolF = 1e-5;
constexpr double kFdStep = 1e-6;

// Backends under test: NEOX_TEST_BACKENDS (comma-separated) if set, else
// "cpu" and every other backend plugin of the build's plugin directory, so
// that a new backend runs this suite as soon as it is built.
std::vector<std::string> backends_under_test() {
  std::vector<std::string> names;
  if (const char* env = std::getenv("NEOX_TEST_BACKENDS"); env && *env) {
    std::string list = env;
    for (std::size_t pos = 0; pos <= list.size();) {
      std::size_t end = list.find(',', pos);
      if (end == std::string::npos) end = list.size();
      if (end > pos) names.push_back(list.substr(pos, end - pos));
      pos = end + 1;
    }
    return names;
  }
  names.push_back("cpu");  // always: a missing cpu plugin is a failure, not a skip
  const std::string dir = neox::test::build_plugin_dir();
  // By file name: a backend built here is tested (and fails if it does not
  // load), without loading every plugin of the directory to find out.
  neox::PluginRegistry registry({dir});
  for (const auto& name : registry.candidates(neox::PluginKind::backend))
    if (name != "cpu" && std::filesystem::exists(std::filesystem::path(dir) / ("neox_backend_" + name + ".so")))
      names.push_back(name);
  return names;
}

// One registry and one backend per name for the whole test program. A
// backend whose device is not there is remembered with the reason, and its
// tests skip (SetUp); any other error making it fails the test.
struct BackendSlot {
  std::shared_ptr<neox::Backend> backend;
  std::string unavailable;  // DeviceUnavailable's message when backend is null
};

const BackendSlot& backend_named(const std::string& name) {
  struct Cache {
    neox::PluginRegistry registry{{neox::test::build_plugin_dir()}};
    std::map<std::string, BackendSlot> backends;
  };
  static Cache cache;
  if (auto it = cache.backends.find(name); it != cache.backends.end()) return it->second;
  BackendSlot slot;
  try {
    slot.backend = cache.registry.make_backend(name, {}, {});
  } catch (const neox::DeviceUnavailable& e) {
    slot.unavailable = e.what();
  }
  return cache.backends.emplace(name, std::move(slot)).first->second;
}

double rel_err(const Vec& got, const Vec& want) {
  EXPECT_EQ(got.size(), want.size());
  double num = 0.0, den = 0.0;
  for (std::size_t i = 0; i < got.size() && i < want.size(); ++i) {
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  if (std::isnan(num)) return INFINITY;
  return den == 0.0 ? std::sqrt(num) : std::sqrt(num / den);
}

#define EXPECT_CLOSE(got, want, tol)                                                  \
  do {                                                                                \
    double err_ = rel_err((got), (want));                                             \
    EXPECT_LT(err_, (tol)) << #got << " vs " << #want << ": relative error " << err_; \
  } while (0)

// Random values rounded to float, so the reference sees exactly what the backend sees.
Vec random_vec(std::mt19937& rng, std::size_t n, double lo = -1.0, double hi = 1.0) {
  std::uniform_real_distribution<double> dist(lo, hi);
  Vec v(n);
  for (auto& x : v) {
    do x = static_cast<float>(dist(rng));
    while (x == 0.0);
  }
  return v;
}

Ids random_ids(std::mt19937& rng, std::size_t n, int V) {
  std::uniform_int_distribution<int> dist(0, V - 1);
  Ids v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

double dot(const Vec& a, const Vec& b) {
  double s = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Central differences of a scalar function with respect to every element of x.
Vec numeric_grad(const std::function<double(const Vec&)>& f, const Vec& x) {
  Vec g(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    Vec xp = x, xm = x;
    xp[i] += kFdStep;
    xm[i] -= kFdStep;
    g[i] = (f(xp) - f(xm)) / (2 * kFdStep);
  }
  return g;
}

// Runs fn and expects a neox::Error whose message contains every fragment.
void expect_error(const std::function<void()>& fn, const std::vector<std::string>& fragments) {
  try {
    fn();
    ADD_FAILURE() << "expected neox::Error containing '" << fragments.front() << "'";
  } catch (const neox::Error& e) {
    std::string msg = e.what();
    for (auto& f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << "'" << f << "' not in: " << msg;
  }
}

class KernelTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    const BackendSlot& slot = backend_named(GetParam());
    if (!slot.backend) GTEST_SKIP() << "backend '" << GetParam() << "' skipped: " << slot.unavailable;
    be_ = slot.backend;
    k_ = &be_->kernels;
  }

  // f32 device tensor from doubles (exactly representable, see random_vec).
  Tensor dev(const Vec& x, Shape shape) {
    std::vector<float> f(x.begin(), x.end());
    Tensor host = Tensor::wrap(f.data(), std::move(shape), DType::f32);
    return be_->to_device(host);
  }
  Tensor dev_ids(Ids ids, Shape shape) {
    Tensor host = Tensor::wrap(ids.data(), std::move(shape), DType::i32);
    return be_->to_device(host);
  }
  Tensor dev_filled(Shape shape, float value) {
    Tensor t = Tensor::empty(be_.get(), std::move(shape), DType::f32);
    k_->fill(t, value);
    return t;
  }
  Vec host(const Tensor& t) {
    Tensor h = be_->to_host(t);
    be_->synchronize();
    EXPECT_EQ(h.dtype(), DType::f32);
    const float* p = h.ptr<float>();
    return Vec(p, p + h.numel());
  }

  std::shared_ptr<neox::Backend> be_;
  neox::Kernels* k_ = nullptr;
  std::mt19937 rng_{1234};
};

// ---------------------------------------------------------------- the backend

TEST_P(KernelTest, FillsEveryOperation) {
  EXPECT_TRUE(neox::kernel_ops_missing(be_->kernels).empty());
  neox::Kernels fresh;
  be_->register_kernels(fresh);
  auto missing = neox::kernel_ops_missing(fresh);
  std::string list;
  for (auto m : missing) list += std::string(m) + " ";
  EXPECT_TRUE(missing.empty()) << "register_kernels leaves out: " << list;
}

TEST_P(KernelTest, AllocatesAlignedMemoryAndCopies) {
  for (std::size_t bytes : {0, 1, 3, 64, 1000, 4096}) {
    void* p = be_->allocate(bytes);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(p) % 64, 0u) << bytes << " bytes";
    be_->deallocate(p, bytes);
  }
  Vec x = random_vec(rng_, 100);
  Tensor t = dev(x, {10, 10});
  EXPECT_EQ(host(t), x);
  Tensor u = Tensor::empty(be_.get(), {10, 10}, DType::f32);
  be_->copy_tensor(u, t);
  EXPECT_EQ(host(u), x);
}

// ---------------------------------------------------------------- matmul

TEST_P(KernelTest, MatmulAllTransposesAlphaBeta) {
  const int M = 37, N = 29, K = 23;
  struct Case {
    float alpha, beta;
  };
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (Case cs : {Case{1.0f, 0.0f}, Case{0.5f, 1.0f}, Case{-1.5f, 0.25f}}) {
        SCOPED_TRACE("trans_a=" + std::to_string(ta) + " trans_b=" + std::to_string(tb) +
                     " alpha=" + std::to_string(cs.alpha) + " beta=" + std::to_string(cs.beta));
        Vec a = random_vec(rng_, M * K), b = random_vec(rng_, K * N), c = random_vec(rng_, M * N);
        Tensor ta_ = dev(a, ta ? Shape{K, M} : Shape{M, K});
        Tensor tb_ = dev(b, tb ? Shape{N, K} : Shape{K, N});
        Tensor tc = dev(c, {M, N});
        k_->matmul(tc, ta_, tb_, ta, tb, cs.alpha, cs.beta);
        ref::matmul(c, a, b, M, N, K, ta, tb, cs.alpha, cs.beta);
        EXPECT_CLOSE(host(tc), c, kTol);
      }
}

TEST_P(KernelTest, MatmulBetaZeroIgnoresNaNAndBatchedShapes) {
  // a as [2, 5, K]: a matrix of M = 10 rows; c as [2, 5, N].
  const int M = 10, N = 7, K = 12;
  Vec a = random_vec(rng_, M * K), b = random_vec(rng_, K * N);
  Tensor tc = dev_filled({2, 5, N}, NAN);
  k_->matmul(tc, dev(a, {2, 5, K}), dev(b, {K, N}), false, false, 1.0f, 0.0f);
  Vec c(M * N, 0.0);
  ref::matmul(c, a, b, M, N, K, false, false, 1.0, 0.0);
  EXPECT_CLOSE(host(tc), c, kTol);
}

TEST_P(KernelTest, MatmulShapeMismatchThrows) {
  Tensor a = dev(random_vec(rng_, 12), {3, 4}), b = dev(random_vec(rng_, 15), {5, 3});
  Tensor c = dev_filled({3, 3}, 0.0f);
  expect_error([&] { k_->matmul(c, a, b, false, false, 1.0f, 0.0f); }, {"matmul"});
  expect_error([&] { k_->matmul(c, a, b, true, true, 1.0f, 0.0f); }, {"matmul"});
  Tensor ids = dev_ids({1, 2, 3}, {3});
  expect_error([&] { k_->matmul(c, ids, b, false, false, 1.0f, 0.0f); }, {"matmul", "i32"});
}

// ---------------------------------------------------------------- bias

TEST_P(KernelTest, AddBias) {
  const int N = 260, C = 70;  // sizes above the backends' parallel thresholds
  Vec out = random_vec(rng_, N * C), bias = random_vec(rng_, C);
  Tensor t = dev(out, {N, C});
  k_->add_bias(t, dev(bias, {C}));
  ref::add_bias(out, bias, N, C);
  EXPECT_CLOSE(host(t), out, kTol);
  Tensor bad = dev(bias, {C - 1 > 0 ? C - 1 : 1});
  expect_error([&] { k_->add_bias(t, bad); }, {"add_bias", "bias"});
}

TEST_P(KernelTest, BiasBackwardAccumulatesAndMatchesFiniteDifferences) {
  const int N = 261, C = 70;
  Vec dout = random_vec(rng_, N * C), dbias0 = random_vec(rng_, C);
  Tensor tdb = dev(dbias0, {C});
  Tensor tdout = dev(dout, {N, C});
  k_->bias_backward(tdb, tdout);
  Vec want = dbias0;
  ref::bias_backward(want, dout, N, C);
  EXPECT_CLOSE(host(tdb), want, kTol);
  k_->bias_backward(tdb, tdout);  // accumulates again
  ref::bias_backward(want, dout, N, C);
  EXPECT_CLOSE(host(tdb), want, kTol);

  // d/dbias of sum(add_bias(x, bias) * w) is bias_backward(w)
  const int n = 3, c = 5;
  Vec x = random_vec(rng_, n * c), w = random_vec(rng_, n * c), bias = random_vec(rng_, c);
  auto f = [&](const Vec& bv) {
    Vec o = x;
    ref::add_bias(o, bv, n, c);
    return dot(o, w);
  };
  Vec g(c, 0.0);
  ref::bias_backward(g, w, n, c);
  Vec fd = numeric_grad(f, bias);
  EXPECT_CLOSE(g, fd, kFdTol);
  Tensor tg = dev_filled({c}, 0.0f);
  k_->bias_backward(tg, dev(w, {n, c}));
  EXPECT_CLOSE(host(tg), fd, kFdTolF);
}

// ---------------------------------------------------------------- layernorm

TEST_P(KernelTest, LayerNormForward) {
  const int B = 4, T = 50, C = 96;
  const int N = B * T;
  const float eps = 1e-5f;
  Vec x = random_vec(rng_, N * C, -2.0, 3.0), w = random_vec(rng_, C), b = random_vec(rng_, C);
  Tensor out = dev_filled({B, T, C}, NAN), mean = dev_filled({B, T}, NAN), rstd = dev_filled({B, T}, NAN);
  k_->layernorm_forward(out, mean, rstd, dev(x, {B, T, C}), dev(w, {C}), dev(b, {C}), eps);
  Vec ro(N * C), rm(N), rr(N);
  ref::layernorm_forward(ro, rm, rr, x, w, b, N, C, eps);
  EXPECT_CLOSE(host(out), ro, kTol);
  EXPECT_CLOSE(host(mean), rm, kTol);
  EXPECT_CLOSE(host(rstd), rr, kTol);

  Tensor bad_w = dev(random_vec(rng_, C + 1), {C + 1});
  expect_error(
      [&] {
        k_->layernorm_forward(out, mean, rstd, dev(x, {B, T, C}), bad_w, dev(b, {C}), eps);
      },
      {"layernorm_forward", "weight"});
}

TEST_P(KernelTest, LayerNormBackward) {
  const int N = 200, C = 101;
  const float eps = 1e-5f;
  Vec x = random_vec(rng_, N * C, -2.0, 3.0), w = random_vec(rng_, C), b = random_vec(rng_, C);
  Vec dout = random_vec(rng_, N * C);
  Vec dx0 = random_vec(rng_, N * C), dw0 = random_vec(rng_, C), db0 = random_vec(rng_, C);
  Tensor tx = dev(x, {N, C}), tw = dev(w, {C});
  Tensor out = dev_filled({N, C}, 0.0f), mean = dev_filled({N}, 0.0f), rstd = dev_filled({N}, 0.0f);
  k_->layernorm_forward(out, mean, rstd, tx, tw, dev(b, {C}), eps);
  Tensor tdx = dev(dx0, {N, C}), tdw = dev(dw0, {C}), tdb = dev(db0, {C});
  Tensor tdout = dev(dout, {N, C});
  Vec dx = dx0, dw = dw0, db = db0;
  for (int rep = 0; rep < 2; ++rep) {  // every gradient accumulates
    k_->layernorm_backward(tdx, tdw, tdb, tdout, tx, tw, mean, rstd);
    ref::layernorm_backward(dx, dw, db, dout, x, w, N, C, eps);
    EXPECT_CLOSE(host(tdx), dx, kTol);
    EXPECT_CLOSE(host(tdw), dw, kTol);
    EXPECT_CLOSE(host(tdb), db, kTol);
  }
  expect_error([&] { k_->layernorm_backward(tdx, tdw, tdb, tdout, tx, tw, rstd, dev(dw0, {C})); },
               {"layernorm_backward", "rstd"});
}

TEST_P(KernelTest, LayerNormBackwardMatchesFiniteDifferences) {
  const int N = 3, C = 6;
  const double eps = 1e-5;
  Vec x = random_vec(rng_, N * C, -2.0, 3.0), w = random_vec(rng_, C), b = random_vec(rng_, C);
  Vec g = random_vec(rng_, N * C);
  auto loss = [&](const Vec& xv, const Vec& wv, const Vec& bv) {
    Vec o(N * C), m(N), r(N);
    ref::layernorm_forward(o, m, r, xv, wv, bv, N, C, eps);
    return dot(o, g);
  };
  Vec dx(N * C, 0.0), dw(C, 0.0), db(C, 0.0);
  ref::layernorm_backward(dx, dw, db, g, x, w, N, C, eps);
  Vec fdx = numeric_grad([&](const Vec& v) { return loss(v, w, b); }, x);
  Vec fdw = numeric_grad([&](const Vec& v) { return loss(x, v, b); }, w);
  Vec fdb = numeric_grad([&](const Vec& v) { return loss(x, w, v); }, b);
  EXPECT_CLOSE(dx, fdx, kFdTol);
  EXPECT_CLOSE(dw, fdw, kFdTol);
  EXPECT_CLOSE(db, fdb, kFdTol);

  Tensor tx = dev(x, {N, C}), tw = dev(w, {C});
  Tensor out = dev_filled({N, C}, 0.0f), mean = dev_filled({N}, 0.0f), rstd = dev_filled({N}, 0.0f);
  k_->layernorm_forward(out, mean, rstd, tx, tw, dev(b, {C}), static_cast<float>(eps));
  Tensor tdx = dev_filled({N, C}, 0.0f), tdw = dev_filled({C}, 0.0f), tdb = dev_filled({C}, 0.0f);
  k_->layernorm_backward(tdx, tdw, tdb, dev(g, {N, C}), tx, tw, mean, rstd);
  EXPECT_CLOSE(host(tdx), fdx, kFdTolF);
  EXPECT_CLOSE(host(tdw), fdw, kFdTolF);
  EXPECT_CLOSE(host(tdb), fdb, kFdTolF);
}

// ---------------------------------------------------------------- gelu

TEST_P(KernelTest, GeluForwardInPlace) {
  const int n = 20000;
  Vec x = random_vec(rng_, n, -5.0, 5.0), want(n);
  for (int i = 0; i < n; ++i) want[i] = ref::gelu(x[i]);
  Tensor out = dev_filled({n}, NAN);
  Tensor tx = dev(x, {20, 1000});
  k_->gelu_forward(out, tx);
  EXPECT_CLOSE(host(out), want, kTol);
  k_->gelu_forward(tx, tx);  // out may alias inp
  EXPECT_CLOSE(host(tx), want, kTol);
  Tensor small = dev_filled({n - 1}, 0.0f);
  expect_error([&] { k_->gelu_forward(small, out); }, {"gelu_forward"});
}

TEST_P(KernelTest, GeluBackward) {
  const int n = 20000;
  Vec x = random_vec(rng_, n, -5.0, 5.0), dout = random_vec(rng_, n), want(n);
  for (int i = 0; i < n; ++i) want[i] = ref::gelu_grad(x[i]) * dout[i];
  Tensor tx = dev(x, {n}), tdout = dev(dout, {n});
  Tensor dinp = dev_filled({n}, NAN);  // written, not accumulated
  k_->gelu_backward(dinp, tx, tdout);
  EXPECT_CLOSE(host(dinp), want, kTol);
  k_->gelu_backward(tdout, tx, tdout);  // dinp may alias dout
  EXPECT_CLOSE(host(tdout), want, kTol);

  // finite differences of sum(gelu(x) * dout)
  const int m = 20;
  Vec xs(x.begin(), x.begin() + m), gs(dout.begin(), dout.begin() + m), analytic(m);
  for (int i = 0; i < m; ++i) analytic[i] = ref::gelu_grad(xs[i]) * gs[i];
  Vec fd = numeric_grad(
      [&](const Vec& v) {
        double s = 0.0;
        for (int i = 0; i < m; ++i) s += ref::gelu(v[i]) * gs[i];
        return s;
      },
      xs);
  EXPECT_CLOSE(analytic, fd, kFdTol);
  Tensor d = dev_filled({m}, 0.0f);
  k_->gelu_backward(d, dev(xs, {m}), dev(gs, {m}));
  EXPECT_CLOSE(host(d), fd, kFdTolF);
}

// ---------------------------------------------------------------- rotary

TEST_P(KernelTest, RotaryForwardBackward) {
  const int B = 2, T = 200, n_head = 3, hs = 16, C = n_head * hs;
  const float base = 10000.0f;
  for (int rotary_dims : {4, 16}) {
    for (std::int64_t offset : {0, 5}) {
      SCOPED_TRACE("rotary_dims=" + std::to_string(rotary_dims) + " offset=" + std::to_string(offset));
      Vec qkv = random_vec(rng_, B * T * 3 * C);
      Tensor t = dev(qkv, {B, T, 3 * C});
      k_->rotary_forward(t, n_head, rotary_dims, base, offset);
      Vec want = qkv;
      ref::rotary(want, B, T, C, n_head, rotary_dims, base, offset, +1);
      Vec got = host(t);
      EXPECT_CLOSE(got, want, kTol);
      // v and the dimensions past rotary_dims are untouched, bit for bit.
      for (int r = 0; r < B * T; ++r)
        for (int j = 0; j < 3 * C; ++j)
          if (j >= 2 * C || (j % C) % hs >= rotary_dims) {
            ASSERT_EQ(got[r * 3 * C + j], qkv[r * 3 * C + j]) << "row " << r << " column " << j;
          }

      Vec g = random_vec(rng_, B * T * 3 * C);
      Tensor tg = dev(g, {B, T, 3 * C});
      k_->rotary_backward(tg, n_head, rotary_dims, base, offset);
      Vec gwant = g;
      ref::rotary(gwant, B, T, C, n_head, rotary_dims, base, offset, -1);
      EXPECT_CLOSE(host(tg), gwant, kTol);
      // the backward undoes the forward (a rotation)
      k_->rotary_backward(t, n_head, rotary_dims, base, offset);
      EXPECT_CLOSE(host(t), qkv, kTol);
    }
  }
  Tensor t = dev(random_vec(rng_, B * T * 3 * C), {B, T, 3 * C});
  expect_error([&] { k_->rotary_forward(t, n_head, 5, base, 0); }, {"rotary_forward", "rotary_dims"});
  expect_error([&] { k_->rotary_backward(t, n_head, 2 * hs, base, 0); }, {"rotary_backward"});
  expect_error([&] { k_->rotary_forward(t, 5, 4, base, 0); }, {"rotary_forward", "n_head"});
}

TEST_P(KernelTest, RotaryBackwardMatchesFiniteDifferences) {
  const int B = 1, T = 3, n_head = 2, hs = 4, C = n_head * hs, rd = 4;
  const std::int64_t offset = 2;
  Vec x = random_vec(rng_, B * T * 3 * C), w = random_vec(rng_, B * T * 3 * C);
  Vec analytic = w;
  ref::rotary(analytic, B, T, C, n_head, rd, 10000.0, offset, -1);
  Vec fd = numeric_grad(
      [&](const Vec& v) {
        Vec y = v;
        ref::rotary(y, B, T, C, n_head, rd, 10000.0, offset, +1);
        return dot(y, w);
      },
      x);
  EXPECT_CLOSE(analytic, fd, kFdTol);
  Tensor tw = dev(w, {B, T, 3 * C});
  k_->rotary_backward(tw, n_head, rd, 10000.0f, offset);
  EXPECT_CLOSE(host(tw), fd, kFdTolF);
}

// ---------------------------------------------------------------- attention

TEST_P(KernelTest, AttentionForwardBackward) {
  const int B = 2, T = 41, NH = 3, hs = 16, C = NH * hs;
  Vec qkv = random_vec(rng_, B * T * 3 * C, -2.0, 2.0), dout = random_vec(rng_, B * T * C);
  Tensor tqkv = dev(qkv, {B, T, 3 * C});
  Tensor out = dev_filled({B, T, C}, NAN), lse = dev_filled({B, NH, T}, NAN);
  k_->attention_forward(out, lse, tqkv, NH);
  Vec ro(B * T * C), rl(B * NH * T), att;
  ref::attention_forward(ro, rl, att, qkv, B, T, C, NH);
  EXPECT_CLOSE(host(out), ro, kTol);
  EXPECT_CLOSE(host(lse), rl, kTol);

  Tensor dqkv = dev_filled({B, T, 3 * C}, NAN);  // written, not accumulated
  k_->attention_backward(dqkv, dev(dout, {B, T, C}), tqkv, out, lse, NH);
  Vec rd(B * T * 3 * C);
  ref::attention_backward(rd, dout, qkv, B, T, C, NH);
  EXPECT_CLOSE(host(dqkv), rd, kTol);

  Tensor bad_lse = dev_filled({B, NH, T - 1}, 0.0f);
  expect_error([&] { k_->attention_forward(out, bad_lse, tqkv, NH); }, {"attention_forward", "lse"});
  expect_error([&] { k_->attention_forward(out, lse, tqkv, 5); }, {"attention_forward", "n_head"});
  expect_error([&] { k_->attention_backward(dqkv, out, tqkv, out, bad_lse, NH); }, {"attention_backward", "lse"});
}

TEST_P(KernelTest, AttentionBackwardMatchesFiniteDifferences) {
  const int B = 1, T = 5, NH = 2, hs = 4, C = NH * hs;
  Vec qkv = random_vec(rng_, B * T * 3 * C, -2.0, 2.0), w = random_vec(rng_, B * T * C);
  Vec analytic(qkv.size());
  ref::attention_backward(analytic, w, qkv, B, T, C, NH);
  Vec fd = numeric_grad(
      [&](const Vec& v) {
        Vec o(B * T * C), l(B * NH * T), att;
        ref::attention_forward(o, l, att, v, B, T, C, NH);
        return dot(o, w);
      },
      qkv);
  EXPECT_CLOSE(analytic, fd, kFdTol);

  Tensor tqkv = dev(qkv, {B, T, 3 * C});
  Tensor out = dev_filled({B, T, C}, 0.0f), lse = dev_filled({B, NH, T}, 0.0f);
  k_->attention_forward(out, lse, tqkv, NH);
  Tensor dqkv = dev_filled({B, T, 3 * C}, 0.0f);
  k_->attention_backward(dqkv, dev(w, {B, T, C}), tqkv, out, lse, NH);
  EXPECT_CLOSE(host(dqkv), fd, kFdTolF);
}

// ---------------------------------------------------------------- attention_decode

// Rows [t0, t0 + n) of every batch item of x[B, T, W], as [B, n, W].
Vec time_slice(const Vec& x, int B, int T, int W, int t0, int n) {
  Vec out(static_cast<std::size_t>(B) * n * W);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < n; ++t)
      for (int w = 0; w < W; ++w) out[(b * n + t) * W + w] = x[(b * T + t0 + t) * W + w];
  return out;
}

TEST_P(KernelTest, AttentionDecodeInChunksEqualsAttentionForward) {
  const int B = 2, T = 300, NH = 4, hs = 32, C = NH * hs, maxT = 310;
  Vec qkv = random_vec(rng_, B * T * 3 * C, -2.0, 2.0);
  Tensor full = dev_filled({B, T, C}, NAN), lse = dev_filled({B, NH, T}, NAN);
  k_->attention_forward(full, lse, dev(qkv, {B, T, 3 * C}), NH);
  Vec want = host(full);
  Vec ro(B * T * C), rl(B * NH * T), att;
  ref::attention_forward(ro, rl, att, qkv, B, T, C, NH);

  // Positions not yet written hold NaN: reading one would poison the output.
  Tensor kc = dev_filled({B, NH, maxT, hs}, NAN), vc = dev_filled({B, NH, maxT, hs}, NAN);
  Vec got(B * T * C);
  int t0 = 0;
  for (int n : {200, 1, 1, 90, 1, 7}) {  // a prefill (above the parallel threshold), steps, chunks
    SCOPED_TRACE("chunk at " + std::to_string(t0) + " of " + std::to_string(n));
    Tensor out = dev_filled({B, n, C}, NAN);
    k_->attention_decode(out, kc, vc, dev(time_slice(qkv, B, T, 3 * C, t0, n), {B, n, 3 * C}), NH, t0);
    Vec o = host(out);
    for (int b = 0; b < B; ++b)
      for (int t = 0; t < n; ++t)
        for (int c = 0; c < C; ++c) got[(b * T + t0 + t) * C + c] = o[(b * n + t) * C + c];
    t0 += n;
  }
  ASSERT_EQ(t0, T);
  EXPECT_CLOSE(got, want, kTol);
  EXPECT_CLOSE(got, ro, kTol);

  // The cache holds k and v exactly, by head; positions past T are untouched.
  Vec hk = host(kc), hv = host(vc);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h)
      for (int t = 0; t < maxT; ++t)
        for (int i = 0; i < hs; ++i) {
          const std::size_t at = ((static_cast<std::size_t>(b) * NH + h) * maxT + t) * hs + i;
          if (t < T) {
            ASSERT_EQ(hk[at], qkv[(b * T + t) * 3 * C + C + h * hs + i]) << b << " " << h << " " << t;
            ASSERT_EQ(hv[at], qkv[(b * T + t) * 3 * C + 2 * C + h * hs + i]) << b << " " << h << " " << t;
          } else {
            ASSERT_TRUE(std::isnan(hk[at]) && std::isnan(hv[at])) << "position " << t << " was written";
          }
        }
}

TEST_P(KernelTest, AttentionDecodePrefillAndStepsMatchReference) {
  const int B = 3, NH = 2, hs = 8, C = NH * hs, maxT = 12, prompt = 5;
  Tensor kc = dev_filled({B, NH, maxT, hs}, 0.0f), vc = dev_filled({B, NH, maxT, hs}, 0.0f);
  Vec rk(static_cast<std::size_t>(B) * NH * maxT * hs, 0.0), rv = rk;
  int offset = 0;
  for (int n : {prompt, 1, 1, 1, 1, 3}) {
    SCOPED_TRACE("offset " + std::to_string(offset) + ", " + std::to_string(n) + " tokens");
    Vec qkv = random_vec(rng_, B * n * 3 * C, -2.0, 2.0);
    Tensor out = dev_filled({B, n, C}, NAN);
    k_->attention_decode(out, kc, vc, dev(qkv, {B, n, 3 * C}), NH, offset);
    Vec ro(B * n * C);
    ref::attention_decode(ro, rk, rv, qkv, B, n, C, NH, maxT, offset);
    EXPECT_CLOSE(host(out), ro, kTol);
    offset += n;
  }
  EXPECT_EQ(offset, maxT);  // the last call fills the cache exactly
  EXPECT_CLOSE(host(kc), rk, kTol);
  EXPECT_CLOSE(host(vc), rv, kTol);
}

TEST_P(KernelTest, AttentionDecodeChecksTheCache) {
  const int B = 2, NH = 2, hs = 4, C = NH * hs, maxT = 6;
  Tensor kc = dev_filled({B, NH, maxT, hs}, 0.0f), vc = dev_filled({B, NH, maxT, hs}, 0.0f);
  Tensor qkv = dev(random_vec(rng_, B * 3 * 3 * C), {B, 3, 3 * C});
  Tensor out = dev_filled({B, 3, C}, 0.0f);
  k_->attention_decode(out, kc, vc, qkv, NH, 3);  // positions 3..5: fits exactly
  expect_error([&] { k_->attention_decode(out, kc, vc, qkv, NH, 4); }, {"attention_decode", "[4, 7)", "max_T = 6"});
  expect_error([&] { k_->attention_decode(out, kc, vc, qkv, NH, -1); }, {"attention_decode", "position_offset"});
  Tensor kc_heads = dev_filled({B, NH + 1, maxT, hs}, 0.0f);
  expect_error([&] { k_->attention_decode(out, kc_heads, vc, qkv, NH, 0); }, {"attention_decode", "k_cache"});
  Tensor vc_short = dev_filled({B, NH, maxT - 1, hs}, 0.0f);
  expect_error([&] { k_->attention_decode(out, kc, vc_short, qkv, NH, 0); }, {"attention_decode", "v_cache"});
  Tensor out_short = dev_filled({B, 2, C}, 0.0f);
  expect_error([&] { k_->attention_decode(out_short, kc, vc, qkv, NH, 0); }, {"attention_decode", "out"});
  expect_error([&] { k_->attention_decode(out, kc, kc, qkv, NH, 0); }, {"attention_decode", "overlaps"});
}

// ---------------------------------------------------------------- cross-entropy

TEST_P(KernelTest, CrossEntropyForwardBackward) {
  const int N = 64, V = 301;
  const float dloss = 1.0f / 6.0f;
  Vec logits = random_vec(rng_, N * V, -4.0, 4.0);
  Ids targets = random_ids(rng_, N, V);
  targets[2] = -100;  // ignored (PyTorch's ignore_index)
  targets[5] = -1;    // ignored
  Tensor tl = dev(logits, {N, V}), tt = dev_ids(targets, {N});
  Tensor losses = dev_filled({N}, NAN), lse = dev_filled({N}, NAN);
  k_->cross_entropy_forward(losses, lse, tl, tt);
  Vec rloss(N), rlse(N);
  ref::cross_entropy_forward(rloss, rlse, logits, targets, N, V);
  Vec got = host(losses);
  EXPECT_CLOSE(got, rloss, kTol);
  EXPECT_CLOSE(host(lse), rlse, kTol);
  EXPECT_EQ(got[2], 0.0);
  EXPECT_EQ(got[5], 0.0);

  Tensor dl = dev_filled({N, V}, NAN);  // written
  k_->cross_entropy_backward(dl, tl, lse, tt, dloss);
  Vec rdl(N * V);
  ref::cross_entropy_backward(rdl, logits, targets, N, V, dloss);
  Vec gd = host(dl);
  EXPECT_CLOSE(gd, rdl, kTol);
  for (int i = 0; i < V; ++i) ASSERT_EQ(gd[2 * V + i], 0.0) << "ignored row 2";

  k_->cross_entropy_backward(tl, tl, lse, tt, dloss);  // dlogits may alias logits
  EXPECT_CLOSE(host(tl), rdl, kTol);
}

TEST_P(KernelTest, CrossEntropyBackwardMatchesFiniteDifferences) {
  const int N = 3, V = 7;
  const double dloss = 0.75;
  Vec logits = random_vec(rng_, N * V, -3.0, 3.0);
  Ids targets = {4, -1, 0};
  Vec analytic(N * V);
  ref::cross_entropy_backward(analytic, logits, targets, N, V, dloss);
  Vec fd = numeric_grad(
      [&](const Vec& v) {
        Vec l(N), s(N);
        ref::cross_entropy_forward(l, s, v, targets, N, V);
        double total = 0.0;
        for (double x : l) total += x * dloss;
        return total;
      },
      logits);
  EXPECT_CLOSE(analytic, fd, kFdTol);
  Tensor tl = dev(logits, {N, V}), tt = dev_ids(targets, {N});
  Tensor losses = dev_filled({N}, 0.0f), lse = dev_filled({N}, 0.0f), dl = dev_filled({N, V}, 0.0f);
  k_->cross_entropy_forward(losses, lse, tl, tt);
  k_->cross_entropy_backward(dl, tl, lse, tt, static_cast<float>(dloss));
  EXPECT_CLOSE(host(dl), fd, kFdTolF);
}

TEST_P(KernelTest, CrossEntropyTargetOutOfRangeThrows) {
  const int N = 5, V = 11;
  Tensor tl = dev(random_vec(rng_, N * V), {N, V});
  Tensor tt = dev_ids({0, 1, 2, V, 3}, {N});
  Tensor losses = dev_filled({N}, 0.0f), lse = dev_filled({N}, 0.0f), dl = dev_filled({N, V}, 0.0f);
  expect_error([&] { k_->cross_entropy_forward(losses, lse, tl, tt); },
               {"cross_entropy_forward", "row 3", std::to_string(V)});
  expect_error([&] { k_->cross_entropy_backward(dl, tl, lse, tt, 1.0f); }, {"cross_entropy_backward", "row 3"});
  Tensor f32_targets = dev_filled({N}, 1.0f);
  expect_error([&] { k_->cross_entropy_forward(losses, lse, tl, f32_targets); }, {"cross_entropy_forward", "targets"});
}

// ---------------------------------------------------------------- embedding

TEST_P(KernelTest, EmbeddingForward) {
  const int V = 17, C = 64, B = 3, T = 120, N = B * T;
  Vec table = random_vec(rng_, V * C), base = random_vec(rng_, N * C);
  Ids ids = random_ids(rng_, N, V);
  ids[0] = 0;
  ids[1] = V - 1;
  Tensor ttable = dev(table, {V, C}), tids = dev_ids(ids, {B, T});
  Tensor out = dev_filled({B, T, C}, NAN);
  k_->embedding_forward(out, tids, ttable, false);
  Vec want(N * C);
  ref::embedding_forward(want, ids, table, N, C);
  EXPECT_CLOSE(host(out), want, kTol);

  Tensor acc = dev(base, {B, T, C});
  k_->embedding_forward(acc, tids, ttable, true);
  for (int i = 0; i < N * C; ++i) want[i] += base[i];
  EXPECT_CLOSE(host(acc), want, kTol);

  Ids bad = ids;
  bad[4] = V;
  expect_error(
      [&] {
        k_->embedding_forward(out, dev_ids(bad, {B, T}), ttable, false);
      },
      {"embedding_forward", "position 4", std::to_string(V)});
  bad[4] = -1;
  expect_error(
      [&] {
        k_->embedding_forward(out, dev_ids(bad, {B, T}), ttable, false);
      },
      {"embedding_forward", "position 4"});
}

TEST_P(KernelTest, EmbeddingBackwardAccumulatesRepeatedIds) {
  const int V = 9, C = 70, N = 300;  // many repeated ids: races would show
  Vec dout = random_vec(rng_, N * C), d0 = random_vec(rng_, V * C);
  Ids ids = random_ids(rng_, N, V);
  Tensor dtable = dev(d0, {V, C}), tids = dev_ids(ids, {N}), tdout = dev(dout, {N, C});
  Vec want = d0;
  for (int rep = 0; rep < 2; ++rep) {
    k_->embedding_backward(dtable, tids, tdout);
    ref::embedding_backward(want, ids, dout, N, C);
    EXPECT_CLOSE(host(dtable), want, kTol);
  }
  Ids bad = ids;
  bad[7] = V + 3;
  expect_error([&] { k_->embedding_backward(dtable, dev_ids(bad, {N}), tdout); }, {"embedding_backward", "position 7"});

  // finite differences of sum(embedding(table) * w) with respect to the table
  const int v = 4, c = 3, n = 5;
  Ids small_ids = {1, 3, 1, 0, 1};
  Vec tab = random_vec(rng_, v * c), w = random_vec(rng_, n * c);
  Vec fd = numeric_grad(
      [&](const Vec& t) {
        Vec o(n * c);
        ref::embedding_forward(o, small_ids, t, n, c);
        return dot(o, w);
      },
      tab);
  Vec analytic(v * c, 0.0);
  ref::embedding_backward(analytic, small_ids, w, n, c);
  EXPECT_CLOSE(analytic, fd, kFdTol);
  Tensor td = dev_filled({v, c}, 0.0f);
  k_->embedding_backward(td, dev_ids(small_ids, {n}), dev(w, {n, c}));
  EXPECT_CLOSE(host(td), fd, kFdTolF);
}

// ---------------------------------------------------------------- elementwise

TEST_P(KernelTest, AddAxpbyFill) {
  const int n = 40000;
  Vec a = random_vec(rng_, n), b = random_vec(rng_, n), want(n);
  for (int i = 0; i < n; ++i) want[i] = a[i] + b[i];
  Tensor ta = dev(a, {n}), tb = dev(b, {4, 10000}), out = dev_filled({n}, NAN);
  k_->add(out, ta, tb);
  EXPECT_CLOSE(host(out), want, kTol);
  k_->add(ta, ta, tb);  // out may alias a
  EXPECT_CLOSE(host(ta), want, kTol);
  Tensor ta2 = dev(a, {n});
  k_->add(tb, ta2, tb);  // or b
  EXPECT_CLOSE(host(tb), want, kTol);
  Tensor short_b = dev_filled({n - 1}, 1.0f);
  expect_error([&] { k_->add(out, ta, short_b); }, {"add"});

  Vec x = random_vec(rng_, n), y = random_vec(rng_, n);
  Tensor tx = dev(x, {n}), ty = dev(y, {n});
  k_->axpby(ty, tx, 0.5f, -2.0f);
  for (int i = 0; i < n; ++i) want[i] = 0.5 * x[i] - 2.0 * y[i];
  EXPECT_CLOSE(host(ty), want, kTol);
  Tensor tnan = dev_filled({n}, NAN);
  k_->axpby(tnan, tx, 3.0f, 0.0f);  // beta = 0 ignores y, as matmul's beta
  for (int i = 0; i < n; ++i) want[i] = 3.0 * x[i];
  EXPECT_CLOSE(host(tnan), want, kTol);

  Tensor f = Tensor::empty(be_.get(), {4, 5}, DType::f32);
  k_->fill(f, -2.5f);
  EXPECT_EQ(host(f), Vec(20, -2.5));
}

TEST_P(KernelTest, ConvertIsBitExact) {
  std::vector<float> src;
  for (double v : random_vec(rng_, 200, -100.0, 100.0)) src.push_back(static_cast<float>(v));
  for (float s : {1e-9f, -3e-6f, 65504.0f, 70000.0f, 1e30f, INFINITY, -INFINITY, 0.0f, -0.0f}) src.push_back(s);
  const std::int64_t n = static_cast<std::int64_t>(src.size());
  Tensor f32 = be_->to_device(Tensor::wrap(src.data(), {n}, DType::f32));
  Tensor bf = Tensor::empty(be_.get(), {n}, DType::bf16), hf = Tensor::empty(be_.get(), {n}, DType::f16);
  Tensor back = Tensor::empty(be_.get(), {n}, DType::f32), bf_from_hf = Tensor::empty(be_.get(), {n}, DType::bf16);
  k_->convert(bf, f32);
  k_->convert(hf, f32);
  k_->convert(bf_from_hf, hf);
  k_->convert(back, bf);
  Tensor hbf = be_->to_host(bf), hhf = be_->to_host(hf), hback = be_->to_host(back), hbh = be_->to_host(bf_from_hf);
  for (std::int64_t i = 0; i < n; ++i) {
    std::uint16_t want_bf = neox::float_to_bf16(src[i]), want_hf = neox::float_to_f16(src[i]);
    ASSERT_EQ(hbf.ptr<std::uint16_t>()[i], want_bf) << "f32 -> bf16 of " << src[i];
    ASSERT_EQ(hhf.ptr<std::uint16_t>()[i], want_hf) << "f32 -> f16 of " << src[i];
    float rt = neox::bf16_to_float(want_bf);
    ASSERT_EQ(std::memcmp(&hback.ptr<float>()[i], &rt, 4), 0) << "bf16 -> f32 of " << src[i];
    ASSERT_EQ(hbh.ptr<std::uint16_t>()[i], neox::float_to_bf16(neox::f16_to_float(want_hf)))
        << "f16 -> bf16 of " << src[i];
  }
  Tensor ids = dev_ids({1, 2}, {2});
  expect_error([&] { k_->convert(back, ids); }, {"convert"});
  Tensor short_out = Tensor::empty(be_.get(), {n - 1}, DType::bf16);
  expect_error([&] { k_->convert(short_out, f32); }, {"convert"});

  Tensor fb = Tensor::empty(be_.get(), {7}, DType::bf16);
  k_->fill(fb, 1.5f);
  Tensor hfb = be_->to_host(fb);
  for (int i = 0; i < 7; ++i) EXPECT_EQ(hfb.ptr<std::uint16_t>()[i], neox::float_to_bf16(1.5f));
}

// ---------------------------------------------------------------- reductions

TEST_P(KernelTest, SumAndSumSquares) {
  const int n = 100003;  // odd, larger than a thread's chunk
  Vec x = random_vec(rng_, n, -3.0, 2.0);
  double s = 0.0, ss = 0.0;
  for (double v : x) {
    s += v;
    ss += v * v;
  }
  Tensor t = dev(x, {n});
  EXPECT_NEAR(k_->sum(t), s, 1e-12 * std::abs(s) + 1e-9);
  EXPECT_NEAR(k_->sum_squares(t), ss, 1e-12 * ss);
  Tensor ids = dev_ids({1}, {1});
  expect_error([&] { k_->sum(ids); }, {"sum"});
  expect_error([&] { k_->sum_squares(ids); }, {"sum_squares"});
}

// fp16 loss scaling detects overflow by a non-finite gradient norm, so a NaN
// or an infinity anywhere in x must make sum_squares (and sum) non-finite,
// in every float dtype, whatever thread reduces that element.
TEST_P(KernelTest, SumSquaresOfNaNOrInfinityIsNotFinite) {
  const int n = 40001;  // above the parallel thresholds
  Vec x = random_vec(rng_, n, -2.0, 2.0);
  for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
    SCOPED_TRACE(std::string(neox::dtype_name(dt)));
    Tensor f = dev(x, {n});
    Tensor t = Tensor::empty(be_.get(), {n}, dt);
    k_->convert(t, f);
    EXPECT_TRUE(std::isfinite(k_->sum_squares(t)));  // the finite tensor is finite
    EXPECT_TRUE(std::isfinite(k_->sum(t)));
    for (int at : {0, n / 2 + 3, n - 1})
      for (float bad : {NAN, INFINITY, -INFINITY}) {
        SCOPED_TRACE("x[" + std::to_string(at) + "] = " + std::to_string(bad));
        Vec y = x;
        y[static_cast<std::size_t>(at)] = bad;
        k_->convert(t, dev(y, {n}));
        EXPECT_FALSE(std::isfinite(k_->sum_squares(t)));
        EXPECT_FALSE(std::isfinite(k_->sum(t)));
      }
  }
  // An f32 value beyond f16's range (65504) becomes infinity in f16.
  Vec big = x;
  big[12345] = 1e5;
  Tensor h = Tensor::empty(be_.get(), {n}, DType::f16);
  k_->convert(h, dev(big, {n}));
  EXPECT_FALSE(std::isfinite(k_->sum_squares(h)));
  EXPECT_TRUE(std::isfinite(k_->sum_squares(dev(big, {n}))));
}

// ---------------------------------------------------------------- AdamW

TEST_P(KernelTest, AdamWMatchesPyTorchFormula) {
  const int n = 40001;
  Vec p = random_vec(rng_, n), m(n, 0.0), v(n, 0.0);
  Tensor tp = dev(p, {n}), tm = dev_filled({n}, 0.0f), tv = dev_filled({n}, 0.0f);
  for (int step = 1; step <= 3; ++step) {
    Vec g = random_vec(rng_, n, -0.1, 0.1);
    neox::AdamWParams ap;
    ap.lr = 1e-2f;
    ap.beta1 = 0.9f;
    ap.beta2 = 0.95f;
    ap.eps = 1e-8f;
    ap.weight_decay = 0.1f;
    ap.step = step;
    ap.grad_scale = step == 2 ? 0.5f : 1.0f;
    k_->adamw_update(tp, dev(g, {n}), tm, tv, ap);
    ref::adamw(p, g, m, v, ap.lr, ap.beta1, ap.beta2, ap.eps, ap.weight_decay, step, ap.grad_scale);
    EXPECT_CLOSE(host(tp), p, 1e-6);
    EXPECT_CLOSE(host(tm), m, 1e-6);
    EXPECT_CLOSE(host(tv), v, 1e-6);
  }
  Tensor short_grad = dev_filled({n - 1}, 0.0f);
  expect_error([&] { k_->adamw_update(tp, short_grad, tm, tv, neox::AdamWParams{}); }, {"adamw_update", "grad"});
}

INSTANTIATE_TEST_SUITE_P(Backends, KernelTest, ::testing::ValuesIn(backends_under_test()),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

// ---------------------------------------------------------------- bf16 and f16
//
// Every op with its activations in bf16 or f16 (kernels.h, "Precision"), for
// every backend under test, against the cpu backend's f32 kernels run on the
// same values: inputs are rounded to the dtype first, so both runs see
// exactly the same numbers (the f32 kernels are held to the float64
// reference above). Outputs of gradient or statistic role are f32 in both.
//
// Tolerances, relative error ||got - want|| / ||want|| of each output:
//   kBf16Tol = 2e-2, kF16Tol = 5e-3  outputs stored in the compute dtype.
//     Rounding a value once costs up to 2^-9 of it in bf16 (8 significant
//     bits) and 2^-12 in f16 (11 bits): a normwise error of about 1.1e-3 and
//     1.4e-4 for random data. The tolerances are about 18x and 35x that,
//     room for a GPU backend that also rounds intermediates it keeps in the
//     compute dtype (attention probabilities, a saved output) and sums in
//     another order; a real fault (a dtype decoded as another, a missing
//     term, an f32 role treated as bf16) gives errors of 1e-1 and more.
//   kF32OutTol = 1e-4  outputs that are f32 whatever the dtype (parameter
//     gradients, mean/rstd, lse, losses): both runs compute them in f32 from
//     identical inputs, so only the order of summation may differ.
//   Outputs that are plain copies (embedding rows, cached k and v, axpby
//     with alpha 1 and beta 0), fill and convert: bit-exact.
//   sum, sum_squares: 1e-5 against float64 sums of the same values (the
//     contract allows f32 partial sums per block).
// Two more checks keep the comparison from being a tautology:
//   * every rounded output must differ from the f32 result (error > 0): the
//     rounding has to show, or the output was not stored in the dtype;
//   * the cpu backend is held to bit-exactness: its bf16/f16 path is the f32
//     kernel between exact conversions, so each output must be the f32
//     result rounded once to nearest even (f32 outputs: identical), which
//     tests the conversions, the write-back and the aliasing of the adapter.

constexpr double kBf16Tol = 2e-2;
constexpr double kF16Tol = 5e-3;
constexpr double kF32OutTol = 1e-4;
constexpr double kSumTol = 1e-5;

// x rounded to dt (round to nearest even), as the backends round.
double round_to(DType dt, double x) {
  const float f = static_cast<float>(x);
  switch (dt) {
    case DType::bf16:
      return neox::bf16_to_float(neox::float_to_bf16(f));
    case DType::f16:
      return neox::f16_to_float(neox::float_to_f16(f));
    default:
      return f;
  }
}

// A tensor of dtype dt on `be` holding x, which must be exactly representable in dt.
Tensor make_tensor(neox::Backend& be, const Vec& x, Shape shape, DType dt) {
  Tensor host = Tensor::empty(nullptr, std::move(shape), dt);
  EXPECT_EQ(static_cast<std::size_t>(host.numel()), x.size());
  std::size_t inexact = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const float f = static_cast<float>(x[i]);
    if (round_to(dt, x[i]) != x[i]) ++inexact;
    switch (dt) {
      case DType::bf16:
        host.ptr<std::uint16_t>()[i] = neox::float_to_bf16(f);
        break;
      case DType::f16:
        host.ptr<std::uint16_t>()[i] = neox::float_to_f16(f);
        break;
      default:
        host.ptr<float>()[i] = f;
        break;
    }
  }
  EXPECT_EQ(inexact, 0u) << "test input not rounded to " << neox::dtype_name(dt);
  return be.to_device(host);
}

// The values of an f32, bf16 or f16 tensor on `be`.
Vec read_tensor(neox::Backend& be, const Tensor& t) {
  Tensor h = be.to_host(t);
  be.synchronize();
  Vec v(static_cast<std::size_t>(h.numel()));
  for (std::size_t i = 0; i < v.size(); ++i) switch (h.dtype()) {
      case DType::bf16:
        v[i] = neox::bf16_to_float(h.ptr<std::uint16_t>()[i]);
        break;
      case DType::f16:
        v[i] = neox::f16_to_float(h.ptr<std::uint16_t>()[i]);
        break;
      case DType::f32:
        v[i] = h.ptr<float>()[i];
        break;
      default:
        ADD_FAILURE() << "read_tensor: " << h.str();
        return v;
    }
  return v;
}

// What an output of a low-precision call is.
enum class Kind {
  rounded,  // stored in the compute dtype, a computed value: rounding shows
  copy,     // stored in the compute dtype, a copy of input values: exact
  f32,      // f32 whatever the compute dtype (gradient of a parameter, statistic)
};

// One run of an op's calls on one backend in one dtype: makes the inputs,
// calls the kernels, collects the outputs.
struct OpRun {
  neox::Backend& be;
  DType dt;  // the compute dtype of this run
  struct Output {
    std::string name;
    Vec values;
    Kind kind;
  };
  std::vector<Output> outputs;

  neox::Kernels& k() { return be.kernels; }
  Tensor t(const Vec& x, Shape s) { return make_tensor(be, x, std::move(s), dt); }          // compute dtype
  Tensor f(const Vec& x, Shape s) { return make_tensor(be, x, std::move(s), DType::f32); }  // f32
  Tensor nan(Shape s, DType d) {  // written outputs start as NaN: a read would show
    Tensor r = Tensor::empty(&be, std::move(s), d);
    be.kernels.fill(r, NAN);
    return r;
  }
  Tensor ids(Ids v, Shape s) { return be.to_device(Tensor::wrap(v.data(), std::move(s), DType::i32)); }
  void out(std::string name, const Tensor& x, Kind kind) {
    EXPECT_EQ(x.dtype(), kind == Kind::f32 ? DType::f32 : dt) << name;
    outputs.push_back({std::move(name), read_tensor(be, x), kind});
  }
};

// Parameters: backend name, dtype name ("bf16", "f16").
class LowPrecisionTest : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {
 protected:
  void SetUp() override {
    const std::string& name = std::get<0>(GetParam());
    const DType dt = neox::parse_dtype(std::get<1>(GetParam()));
    const BackendSlot& slot = backend_named(name);
    if (!slot.backend) GTEST_SKIP() << "backend '" << name << "' skipped: " << slot.unavailable;
    be_ = slot.backend;
    cpu_ = backend_named("cpu").backend;
    ASSERT_TRUE(cpu_) << "the cpu backend is the reference";
    dt_ = dt;
    other_ = dt == DType::bf16 ? DType::f16 : DType::bf16;
    tol_ = dt == DType::bf16 ? kBf16Tol : kF16Tol;
    is_cpu_ = name == "cpu";
  }

  // Random values rounded to the dtype under test, none zero.
  Vec lp(std::size_t n, double lo = -1.0, double hi = 1.0) {
    Vec v = random_vec(rng_, n, lo, hi);
    for (auto& x : v) {
      x = round_to(dt_, x);
      if (x == 0.0) x = 0.5;
    }
    return v;
  }
  Vec lp(const Vec& x) {
    Vec v = x;
    for (auto& e : v) e = round_to(dt_, e);
    return v;
  }

  // Runs `calls` on the backend under test in the dtype under test and on
  // the cpu backend in f32, and compares every output (see the tolerances).
  void check(const std::function<void(OpRun&)>& calls) {
    OpRun got{*be_, dt_, {}}, want{*cpu_, DType::f32, {}};
    calls(got);
    calls(want);
    ASSERT_EQ(got.outputs.size(), want.outputs.size());
    for (std::size_t i = 0; i < got.outputs.size(); ++i) {
      const auto& g = got.outputs[i];
      const auto& w = want.outputs[i];
      SCOPED_TRACE("output " + g.name);
      ASSERT_EQ(g.values.size(), w.values.size());
      const double err = rel_err(g.values, w.values);
      switch (g.kind) {
        case Kind::rounded:
          EXPECT_LT(err, tol_) << "relative error " << err;
          EXPECT_GT(err, 0.0) << "equals the f32 result exactly: not rounded to " << neox::dtype_name(dt_);
          break;
        case Kind::copy:
          EXPECT_EQ(err, 0.0) << "a copy must be exact";
          break;
        case Kind::f32:
          EXPECT_LT(err, kF32OutTol) << "relative error " << err;
          break;
      }
      if (!is_cpu_) continue;
      // cpu: the f32 result rounded once, bit for bit
      std::size_t mismatches = 0, first = 0;
      for (std::size_t j = 0; j < g.values.size(); ++j) {
        const double expect = g.kind == Kind::f32 ? w.values[j] : round_to(dt_, w.values[j]);
        if (g.values[j] != expect && mismatches++ == 0) first = j;
      }
      EXPECT_EQ(mismatches, 0u) << "first at " << first << ": " << g.values[first] << " vs the f32 result "
                                << w.values[first] << " rounded, "
                                << round_to(g.kind == Kind::f32 ? DType::f32 : dt_, w.values[first]);
    }
  }

  std::shared_ptr<neox::Backend> be_, cpu_;
  DType dt_ = DType::bf16, other_ = DType::f16;
  double tol_ = 0.0;
  bool is_cpu_ = false;
  std::mt19937 rng_{4321};
};

TEST_P(LowPrecisionTest, Matmul) {
  const int M = 37, N = 29, K = 23;
  struct Case {
    float alpha, beta;
  };
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (Case cs : {Case{1.0f, 0.0f}, Case{-1.5f, 0.25f}}) {
        SCOPED_TRACE("trans_a=" + std::to_string(ta) + " trans_b=" + std::to_string(tb) +
                     " alpha=" + std::to_string(cs.alpha) + " beta=" + std::to_string(cs.beta));
        Vec a = lp(M * K), b = lp(K * N), c = lp(M * N);
        const Shape sa = ta ? Shape{K, M} : Shape{M, K}, sb = tb ? Shape{N, K} : Shape{K, N};
        check([&](OpRun& r) {
          Tensor tc = r.t(c, {M, N});
          r.k().matmul(tc, r.t(a, sa), r.t(b, sb), ta, tb, cs.alpha, cs.beta);
          r.out("c", tc, Kind::rounded);
          // a weight gradient: a and b in the compute dtype, c f32
          Tensor gc = r.f(c, {M, N});
          r.k().matmul(gc, r.t(a, sa), r.t(b, sb), ta, tb, cs.alpha, cs.beta);
          r.out("c (f32)", gc, Kind::f32);
        });
      }
}

TEST_P(LowPrecisionTest, AddBiasAndBiasBackward) {
  const int N = 260, C = 70;
  Vec out = lp(N * C), bias = lp(C), dout = lp(N * C), dbias = random_vec(rng_, C);
  check([&](OpRun& r) {
    Tensor o = r.t(out, {N, C});
    r.k().add_bias(o, r.t(bias, {C}));
    r.out("out", o, Kind::rounded);
    Tensor db = r.f(dbias, {C});
    r.k().bias_backward(db, r.t(dout, {N, C}));
    r.out("dbias", db, Kind::f32);
  });
}

TEST_P(LowPrecisionTest, LayerNormForwardBackward) {
  const int B = 4, T = 16, C = 96, N = B * T;
  const float eps = 1e-5f;
  Vec x = lp(N * C, -2.0, 3.0), w = lp(C), b = lp(C), dout = lp(N * C), dx0 = lp(N * C);
  Vec dw0 = random_vec(rng_, C), db0 = random_vec(rng_, C);
  // the statistics the backward reads: from the f32 forward on the same values
  Tensor o = Tensor::empty(cpu_.get(), {N, C}, DType::f32), m = Tensor::empty(cpu_.get(), {N}, DType::f32),
         s = Tensor::empty(cpu_.get(), {N}, DType::f32);
  cpu_->kernels.layernorm_forward(o, m, s, make_tensor(*cpu_, x, {N, C}, DType::f32),
                                  make_tensor(*cpu_, w, {C}, DType::f32), make_tensor(*cpu_, b, {C}, DType::f32), eps);
  const Vec mean = read_tensor(*cpu_, m), rstd = read_tensor(*cpu_, s);
  check([&](OpRun& r) {
    Tensor out = r.nan({B, T, C}, r.dt), tm = r.nan({B, T}, DType::f32), ts = r.nan({B, T}, DType::f32);
    r.k().layernorm_forward(out, tm, ts, r.t(x, {B, T, C}), r.t(w, {C}), r.t(b, {C}), eps);
    r.out("out", out, Kind::rounded);
    r.out("mean", tm, Kind::f32);
    r.out("rstd", ts, Kind::f32);
    Tensor dx = r.t(dx0, {N, C}), dw = r.f(dw0, {C}), db = r.f(db0, {C});  // all accumulate
    r.k().layernorm_backward(dx, dw, db, r.t(dout, {N, C}), r.t(x, {N, C}), r.t(w, {C}), r.f(mean, {N}),
                             r.f(rstd, {N}));
    r.out("dinp", dx, Kind::rounded);
    r.out("dweight", dw, Kind::f32);
    r.out("dbias", db, Kind::f32);
  });
}

TEST_P(LowPrecisionTest, GeluForwardBackwardInPlace) {
  const int n = 20000;
  Vec x = lp(n, -5.0, 5.0), dout = lp(n);
  check([&](OpRun& r) {
    Tensor out = r.nan({n}, r.dt);
    r.k().gelu_forward(out, r.t(x, {20, 1000}));
    r.out("out", out, Kind::rounded);
    Tensor inplace = r.t(x, {n});
    r.k().gelu_forward(inplace, inplace);
    r.out("out (in place)", inplace, Kind::rounded);
    Tensor dinp = r.nan({n}, r.dt);
    r.k().gelu_backward(dinp, r.t(x, {n}), r.t(dout, {n}));
    r.out("dinp", dinp, Kind::rounded);
    Tensor d = r.t(dout, {n});
    r.k().gelu_backward(d, r.t(x, {n}), d);
    r.out("dinp (aliasing dout)", d, Kind::rounded);
  });
}

TEST_P(LowPrecisionTest, RotaryForwardBackward) {
  const int B = 2, T = 20, n_head = 3, hs = 16, C = n_head * hs;
  for (int rotary_dims : {4, 16}) {
    SCOPED_TRACE("rotary_dims=" + std::to_string(rotary_dims));
    Vec qkv = lp(B * T * 3 * C), g = lp(B * T * 3 * C);
    check([&](OpRun& r) {
      Tensor q = r.t(qkv, {B, T, 3 * C});
      r.k().rotary_forward(q, n_head, rotary_dims, 10000.0f, 3);
      r.out("qkv", q, Kind::rounded);
      Tensor dq = r.t(g, {B, T, 3 * C});
      r.k().rotary_backward(dq, n_head, rotary_dims, 10000.0f, 3);
      r.out("dqkv", dq, Kind::rounded);
    });
  }
}

// Head size 16, and the sizes at which the cuda backend runs attention on
// the tensor cores (32, 64, 80, 96, 128: plugins/backend-cuda/attention_mma.cuh),
// with T past one 64-row tile and not a multiple of it.
TEST_P(LowPrecisionTest, AttentionForwardBackward) {
  struct Shape {
    int B, T, NH, hs;
  };
  for (const Shape& s : {Shape{2, 17, 2, 16}, Shape{1, 70, 2, 64}, Shape{2, 33, 1, 80}, Shape{1, 65, 1, 128}}) {
    SCOPED_TRACE("head size " + std::to_string(s.hs) + ", T " + std::to_string(s.T));
    const int B = s.B, T = s.T, NH = s.NH, C = NH * s.hs;
    Vec qkv = lp(B * T * 3 * C, -2.0, 2.0), dout = lp(B * T * C);
    // what the backward reads: out (in the dtype) and lse of the f32 forward
    Tensor o = Tensor::empty(cpu_.get(), {B, T, C}, DType::f32), l = Tensor::empty(cpu_.get(), {B, NH, T}, DType::f32);
    cpu_->kernels.attention_forward(o, l, make_tensor(*cpu_, qkv, {B, T, 3 * C}, DType::f32), NH);
    const Vec out = lp(read_tensor(*cpu_, o)), lse = read_tensor(*cpu_, l);
    check([&](OpRun& r) {
      Tensor to = r.nan({B, T, C}, r.dt), tl = r.nan({B, NH, T}, DType::f32);
      r.k().attention_forward(to, tl, r.t(qkv, {B, T, 3 * C}), NH);
      r.out("out", to, Kind::rounded);
      r.out("lse", tl, Kind::f32);
      Tensor dqkv = r.nan({B, T, 3 * C}, r.dt);
      r.k().attention_backward(dqkv, r.t(dout, {B, T, C}), r.t(qkv, {B, T, 3 * C}), r.t(out, {B, T, C}),
                               r.f(lse, {B, NH, T}), NH);
      r.out("dqkv", dqkv, Kind::rounded);
    });
  }
}

TEST_P(LowPrecisionTest, AttentionDecode) {
  const int B = 2, NH = 2, hs = 8, C = NH * hs, maxT = 10;
  const std::vector<int> chunks = {5, 1, 1, 3};  // a prompt, steps, a chunk: fills the cache
  std::vector<Vec> qkv;
  for (int n : chunks) qkv.push_back(lp(B * n * 3 * C, -2.0, 2.0));
  check([&](OpRun& r) {
    const Vec zeros(static_cast<std::size_t>(B) * NH * maxT * hs, 0.0);
    Tensor kc = r.t(zeros, {B, NH, maxT, hs}), vc = r.t(zeros, {B, NH, maxT, hs});
    int offset = 0;
    for (std::size_t i = 0; i < chunks.size(); ++i) {
      const int n = chunks[i];
      Tensor out = r.nan({B, n, C}, r.dt);
      r.k().attention_decode(out, kc, vc, r.t(qkv[i], {B, n, 3 * C}), NH, offset);
      r.out("out of chunk " + std::to_string(i), out, Kind::rounded);
      offset += n;
    }
    r.out("k_cache", kc, Kind::copy);
    r.out("v_cache", vc, Kind::copy);
  });
}

TEST_P(LowPrecisionTest, CrossEntropyForwardBackward) {
  // V = 2056: rows of a multiple of 8 elements, which the cuda backend reads
  // 16 bytes at a time in bf16 and f16 (V = 301: element by element).
  for (const int V : {301, 2056}) {
    SCOPED_TRACE("V " + std::to_string(V));
    const int N = 32;
    const float dloss = 1.0f / 6.0f;
    Vec logits = lp(N * V, -4.0, 4.0);
    Ids targets = random_ids(rng_, N, V);
    targets[2] = -100;  // ignored
    Tensor tl = Tensor::empty(cpu_.get(), {N}, DType::f32), ts = Tensor::empty(cpu_.get(), {N}, DType::f32);
    cpu_->kernels.cross_entropy_forward(tl, ts, make_tensor(*cpu_, logits, {N, V}, DType::f32),
                                        cpu_->to_device(Tensor::wrap(targets.data(), {N}, DType::i32)));
    const Vec lse = read_tensor(*cpu_, ts);
    check([&](OpRun& r) {
      Tensor losses = r.nan({N}, DType::f32), l = r.nan({N}, DType::f32), tt = r.ids(targets, {N});
      r.k().cross_entropy_forward(losses, l, r.t(logits, {N, V}), tt);
      r.out("losses", losses, Kind::f32);
      r.out("lse", l, Kind::f32);
      Tensor dl = r.nan({N, V}, r.dt);
      r.k().cross_entropy_backward(dl, r.t(logits, {N, V}), r.f(lse, {N}), tt, dloss);
      r.out("dlogits", dl, Kind::rounded);
      Tensor inplace = r.t(logits, {N, V});
      r.k().cross_entropy_backward(inplace, inplace, r.f(lse, {N}), tt, dloss);
      r.out("dlogits (in place)", inplace, Kind::rounded);
    });
  }
}

TEST_P(LowPrecisionTest, EmbeddingForwardBackward) {
  const int V = 17, C = 64, N = 120;
  Vec table = lp(V * C), base = lp(N * C), dout = lp(N * C), dtable = random_vec(rng_, V * C);
  Ids ids = random_ids(rng_, N, V);
  check([&](OpRun& r) {
    Tensor tids = r.ids(ids, {N}), out = r.nan({N, C}, r.dt);
    r.k().embedding_forward(out, tids, r.t(table, {V, C}), false);
    r.out("out", out, Kind::copy);
    Tensor acc = r.t(base, {N, C});
    r.k().embedding_forward(acc, tids, r.t(table, {V, C}), true);
    r.out("out (accumulated)", acc, Kind::rounded);
    Tensor dt = r.f(dtable, {V, C});
    r.k().embedding_backward(dt, tids, r.t(dout, {N, C}));
    r.out("dtable", dt, Kind::f32);
  });
}

TEST_P(LowPrecisionTest, AddAndAxpby) {
  const int n = 40000;
  Vec a = lp(n), b = lp(n), y = lp(n);
  check([&](OpRun& r) {
    Tensor out = r.nan({n}, r.dt);
    r.k().add(out, r.t(a, {n}), r.t(b, {4, 10000}));
    r.out("a + b", out, Kind::rounded);
    Tensor ta = r.t(a, {n});
    r.k().add(ta, ta, r.t(b, {n}));  // out may alias a
    r.out("a + b (into a)", ta, Kind::rounded);
    Tensor tb = r.t(b, {n});
    r.k().add(tb, r.t(a, {n}), tb);  // or b
    r.out("a + b (into b)", tb, Kind::rounded);
    Tensor ty = r.t(y, {n});
    r.k().axpby(ty, r.t(a, {n}), 0.5f, -2.0f);
    r.out("0.5 x - 2 y", ty, Kind::rounded);
    Tensor tn = r.nan({n}, r.dt);
    r.k().axpby(tn, r.t(a, {n}), 3.0f, 0.0f);  // beta = 0 ignores y's NaNs
    r.out("3 x", tn, Kind::rounded);
    Tensor tc = r.nan({n}, r.dt);
    r.k().axpby(tc, r.t(a, {n}), 1.0f, 0.0f);  // a copy
    r.out("x", tc, Kind::copy);
  });
}

TEST_P(LowPrecisionTest, FillAndConvertAreBitExact) {
  auto bits = [&](float v) { return dt_ == DType::bf16 ? neox::float_to_bf16(v) : neox::float_to_f16(v); };
  auto bits_of = [&](DType d, float v) { return d == DType::bf16 ? neox::float_to_bf16(v) : neox::float_to_f16(v); };
  auto value_of = [&](DType d, std::uint16_t h) {
    return d == DType::bf16 ? neox::bf16_to_float(h) : neox::f16_to_float(h);
  };
  neox::Kernels& k = be_->kernels;
  Tensor t = Tensor::empty(be_.get(), {3, 7}, dt_);
  for (float v : {-2.5f, 1.0f / 3.0f, 1e-6f}) {
    k.fill(t, v);
    Tensor h = be_->to_host(t);
    be_->synchronize();
    for (int i = 0; i < 21; ++i) ASSERT_EQ(h.ptr<std::uint16_t>()[i], bits(v)) << "fill " << v << " at " << i;
  }
  std::vector<float> src;
  for (double v : random_vec(rng_, 1000, -300.0, 300.0)) src.push_back(static_cast<float>(v));
  for (float s : {1e-9f, -3e-6f, 65504.0f, 70000.0f, 1e30f, INFINITY, -INFINITY, 0.0f, -0.0f}) src.push_back(s);
  const auto n = static_cast<std::int64_t>(src.size());
  Tensor f32 = be_->to_device(Tensor::wrap(src.data(), {n}, DType::f32));
  Tensor low = Tensor::empty(be_.get(), {n}, dt_), back = Tensor::empty(be_.get(), {n}, DType::f32);
  Tensor same = Tensor::empty(be_.get(), {n}, dt_), other = Tensor::empty(be_.get(), {n}, other_);
  k.convert(low, f32);
  k.convert(back, low);
  k.convert(same, low);
  k.convert(other, low);
  Tensor hl = be_->to_host(low), hb = be_->to_host(back), hs = be_->to_host(same), ho = be_->to_host(other);
  be_->synchronize();
  for (std::int64_t i = 0; i < n; ++i) {
    const std::uint16_t want = bits(src[i]);
    ASSERT_EQ(hl.ptr<std::uint16_t>()[i], want) << "f32 -> " << neox::dtype_name(dt_) << " of " << src[i];
    const float rt = value_of(dt_, want);
    ASSERT_EQ(std::memcmp(&hb.ptr<float>()[i], &rt, 4), 0) << neox::dtype_name(dt_) << " -> f32 of " << src[i];
    ASSERT_EQ(hs.ptr<std::uint16_t>()[i], want) << "copy of " << src[i];
    ASSERT_EQ(ho.ptr<std::uint16_t>()[i], bits_of(other_, rt))
        << neox::dtype_name(dt_) << " -> " << neox::dtype_name(other_) << " of " << src[i];
  }
}

TEST_P(LowPrecisionTest, SumAndSumSquares) {
  const int n = 100003;
  Vec x = lp(n, -3.0, 2.0);
  double s = 0.0, ss = 0.0;
  for (double v : x) {
    s += v;
    ss += v * v;
  }
  Tensor t = make_tensor(*be_, x, {n}, dt_);
  EXPECT_NEAR(be_->kernels.sum(t), s, kSumTol * std::abs(s));
  EXPECT_NEAR(be_->kernels.sum_squares(t), ss, kSumTol * ss);
}

// Within one call the activations share a dtype; gradients of parameters,
// statistics and optimizer state are f32. Anything else is an error naming
// the op (and, on the cpu backend, the argument).
TEST_P(LowPrecisionTest, MixedDtypesAreRejected) {
  neox::Kernels& k = be_->kernels;
  const DType dt = dt_, o = other_, f = DType::f32;
  auto tensor = [&](Shape s, DType d) {
    Tensor t = Tensor::empty(be_.get(), std::move(s), d);
    k.fill(t, 0.25f);
    return t;
  };
  auto expect_rejected = [&](const std::function<void()>& call, const std::string& op, const std::string& arg,
                             DType arg_dtype) {
    SCOPED_TRACE(op + ": " + arg + " " + std::string(neox::dtype_name(arg_dtype)));
    std::vector<std::string> want = {op};
    if (is_cpu_) want.push_back(arg + " " + std::string(neox::dtype_name(arg_dtype)));
    expect_error(call, want);
  };
  const int M = 4, N = 3, K = 5;
  expect_rejected(
      [&] {
        Tensor c = tensor({M, N}, dt);
        k.matmul(c, tensor({M, K}, dt), tensor({K, N}, f), false, false, 1, 0);
      },
      "matmul", "b", f);
  expect_rejected(
      [&] {
        Tensor c = tensor({M, N}, o);
        k.matmul(c, tensor({M, K}, dt), tensor({K, N}, dt), false, false, 1, 0);
      },
      "matmul", "c", o);
  expect_rejected(
      [&] {
        Tensor c = tensor({M, N}, dt);
        k.matmul(c, tensor({M, K}, f), tensor({K, N}, f), false, false, 1, 0);
      },
      "matmul", "c", dt);
  expect_rejected(
      [&] {
        Tensor out = tensor({M, N}, dt);
        k.add_bias(out, tensor({N}, f));
      },
      "add_bias", "bias", f);
  expect_rejected(
      [&] {
        Tensor db = tensor({N}, dt);
        k.bias_backward(db, tensor({M, N}, dt));
      },
      "bias_backward", "dbias", dt);
  expect_rejected(
      [&] {
        Tensor out = tensor({M, N}, dt), mean = tensor({M}, dt), rstd = tensor({M}, f);
        k.layernorm_forward(out, mean, rstd, tensor({M, N}, dt), tensor({N}, dt), tensor({N}, dt), 1e-5f);
      },
      "layernorm_forward", "mean", dt);
  expect_rejected(
      [&] {
        Tensor dinp = tensor({M, N}, dt), dw = tensor({N}, f), db = tensor({N}, dt);
        k.layernorm_backward(dinp, dw, db, tensor({M, N}, dt), tensor({M, N}, dt), tensor({N}, dt), tensor({M}, f),
                             tensor({M}, f));
      },
      "layernorm_backward", "dbias", dt);
  expect_rejected(
      [&] {
        Tensor out = tensor({M}, f);
        k.gelu_forward(out, tensor({M}, dt));
      },
      "gelu_forward", "out", f);
  expect_rejected(
      [&] {
        Tensor out = tensor({1, 2, 4}, dt), lse = tensor({1, 2, 2}, dt);
        k.attention_forward(out, lse, tensor({1, 2, 12}, dt), 2);
      },
      "attention_forward", "lse", dt);
  expect_rejected(
      [&] {
        Tensor losses = tensor({2}, dt), lse = tensor({2}, f);
        k.cross_entropy_forward(losses, lse, tensor({2, 5}, dt), be_->to_device(Tensor::zeros_host({2}, DType::i32)));
      },
      "cross_entropy_forward", "losses", dt);
  expect_rejected(
      [&] {
        Tensor dtable = tensor({4, 3}, dt);
        k.embedding_backward(dtable, be_->to_device(Tensor::zeros_host({2}, DType::i32)), tensor({2, 3}, dt));
      },
      "embedding_backward", "dtable", dt);
  expect_rejected(
      [&] {
        Tensor out = tensor({6}, dt);
        k.add(out, tensor({6}, dt), tensor({6}, o));
      },
      "add", "b", o);
  expect_rejected(
      [&] {
        Tensor y = tensor({6}, dt);
        k.axpby(y, tensor({6}, f), 1.0f, 0.0f);
      },
      "axpby", "x", f);
  expect_rejected(
      [&] {
        Tensor p = tensor({6}, dt), m = tensor({6}, f), v = tensor({6}, f);
        k.adamw_update(p, tensor({6}, f), m, v, neox::AdamWParams{});
      },
      "adamw_update", "param", dt);
}

// A small valid call of every op: the shapes of its Tensor arguments, in the
// order of the SDK's op table (neox/kernel_contract.h), and the call.
struct ValidCall {
  std::vector<Shape> shapes;
  std::function<void(neox::Kernels&, std::vector<Tensor>&)> call;
};

std::map<std::string, ValidCall> valid_calls() {
  using T = std::vector<Tensor>;
  const std::int64_t M = 4, N = 3, K = 5, B = 1, S = 2, NH = 2, hs = 4, C = NH * hs, maxT = 5, V = 5;
  return {
      {"matmul", {{{M, N}, {M, K}, {K, N}}, [](neox::Kernels& k, T& t) { k.matmul(t[0], t[1], t[2], 0, 0, 1, 0); }}},
      {"add_bias", {{{M, N}, {N}}, [](neox::Kernels& k, T& t) { k.add_bias(t[0], t[1]); }}},
      {"bias_backward", {{{N}, {M, N}}, [](neox::Kernels& k, T& t) { k.bias_backward(t[0], t[1]); }}},
      {"layernorm_forward",
       {{{M, N}, {M}, {M}, {M, N}, {N}, {N}},
        [](neox::Kernels& k, T& t) { k.layernorm_forward(t[0], t[1], t[2], t[3], t[4], t[5], 1e-5f); }}},
      {"layernorm_backward",
       {{{M, N}, {N}, {N}, {M, N}, {M, N}, {N}, {M}, {M}},
        [](neox::Kernels& k, T& t) { k.layernorm_backward(t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7]); }}},
      {"gelu_forward", {{{6}, {6}}, [](neox::Kernels& k, T& t) { k.gelu_forward(t[0], t[1]); }}},
      {"gelu_backward", {{{6}, {6}, {6}}, [](neox::Kernels& k, T& t) { k.gelu_backward(t[0], t[1], t[2]); }}},
      {"rotary_forward", {{{B, S, 3 * C}}, [](neox::Kernels& k, T& t) { k.rotary_forward(t[0], NH, 2, 1e4f, 0); }}},
      {"rotary_backward", {{{B, S, 3 * C}}, [](neox::Kernels& k, T& t) { k.rotary_backward(t[0], NH, 2, 1e4f, 0); }}},
      {"attention_forward",
       {{{B, S, C}, {B, NH, S}, {B, S, 3 * C}},
        [](neox::Kernels& k, T& t) { k.attention_forward(t[0], t[1], t[2], NH); }}},
      {"attention_backward",
       {{{B, S, 3 * C}, {B, S, C}, {B, S, 3 * C}, {B, S, C}, {B, NH, S}},
        [](neox::Kernels& k, T& t) { k.attention_backward(t[0], t[1], t[2], t[3], t[4], NH); }}},
      {"attention_decode",
       {{{B, S, C}, {B, NH, maxT, hs}, {B, NH, maxT, hs}, {B, S, 3 * C}},
        [](neox::Kernels& k, T& t) { k.attention_decode(t[0], t[1], t[2], t[3], NH, 0); }}},
      {"cross_entropy_forward",
       {{{S}, {S}, {S, V}, {S}}, [](neox::Kernels& k, T& t) { k.cross_entropy_forward(t[0], t[1], t[2], t[3]); }}},
      {"cross_entropy_backward",
       {{{S, V}, {S, V}, {S}, {S}},
        [](neox::Kernels& k, T& t) { k.cross_entropy_backward(t[0], t[1], t[2], t[3], 1.0f); }}},
      {"embedding_forward",
       {{{S, N}, {S}, {V, N}}, [](neox::Kernels& k, T& t) { k.embedding_forward(t[0], t[1], t[2], false); }}},
      {"embedding_backward",
       {{{V, N}, {S}, {S, N}}, [](neox::Kernels& k, T& t) { k.embedding_backward(t[0], t[1], t[2]); }}},
      {"add", {{{6}, {6}, {6}}, [](neox::Kernels& k, T& t) { k.add(t[0], t[1], t[2]); }}},
      {"axpby", {{{6}, {6}}, [](neox::Kernels& k, T& t) { k.axpby(t[0], t[1], 1.0f, 0.5f); }}},
      {"fill", {{{6}}, [](neox::Kernels& k, T& t) { k.fill(t[0], 0.5f); }}},
      {"convert", {{{6}, {6}}, [](neox::Kernels& k, T& t) { k.convert(t[0], t[1]); }}},
      {"sum_squares", {{{6}}, [](neox::Kernels& k, T& t) { k.sum_squares(t[0]); }}},
      {"sum", {{{6}}, [](neox::Kernels& k, T& t) { k.sum(t[0]); }}},
      {"adamw_update",
       {{{6}, {6}, {6}, {6}}, [](neox::Kernels& k, T& t) { k.adamw_update(t[0], t[1], t[2], t[3], {}); }}},
  };
}

// Every argument of every op holds to its dtype role in the SDK's table
// (kernels.h, "Precision"): a call that runs with the roles' dtypes is
// refused, naming the op (and, on the cpu backend, the argument), when one
// argument has another: an f32 one in the compute dtype, ids in f32, the
// product or an activation (of an op with several) in the other low dtype.
TEST_P(LowPrecisionTest, EveryArgumentRoleIsEnforced) {
  const auto calls = valid_calls();
  ASSERT_EQ(calls.size(), neox::kernel_op_infos().size()) << "valid_calls() needs an entry per op";
  for (const neox::KernelOpInfo& info : neox::kernel_op_infos()) {
    const std::string op(info.name);
    SCOPED_TRACE(op);
    const auto it = calls.find(op);
    ASSERT_NE(it, calls.end()) << "valid_calls() has no " << op;
    const ValidCall& vc = it->second;
    ASSERT_EQ(vc.shapes.size(), info.args.size());
    std::size_t activations = 0;
    for (const auto& a : info.args) activations += a.role == neox::ArgRole::activation ? 1 : 0;
    auto dtype_of = [&](neox::ArgRole role) {
      switch (role) {
        case neox::ArgRole::f32:
          return DType::f32;
        case neox::ArgRole::index:
          return DType::i32;
        default:
          return dt_;
      }
    };
    auto run = [&](std::size_t wrong, DType wrong_dtype) {
      std::vector<Tensor> t;
      for (std::size_t i = 0; i < info.args.size(); ++i) {
        const DType d = i == wrong ? wrong_dtype : dtype_of(info.args[i].role);
        t.push_back(Tensor::empty(be_.get(), vc.shapes[i], d));
        if (d == DType::i32)
          be_->copy_tensor(t.back(), be_->to_device(Tensor::zeros_host(vc.shapes[i], d)));
        else
          be_->kernels.fill(t.back(), 0.25f);
      }
      vc.call(be_->kernels, t);
      be_->synchronize();
    };
    ASSERT_NO_THROW(run(info.args.size(), dt_)) << "the valid call";
    for (std::size_t i = 0; i < info.args.size(); ++i) {
      DType wrong = dt_;
      switch (info.args[i].role) {
        case neox::ArgRole::f32:
          wrong = dt_;
          break;
        case neox::ArgRole::index:
          wrong = DType::f32;
          break;
        case neox::ArgRole::product:
          wrong = other_;
          break;
        case neox::ArgRole::activation:
          if (activations < 2) continue;  // the only activation sets the compute dtype
          wrong = other_;
          break;
        case neox::ArgRole::native:
          continue;
      }
      SCOPED_TRACE(std::string(info.args[i].name) + " " + std::string(neox::dtype_name(wrong)));
      std::vector<std::string> want = {op};
      if (is_cpu_) want.push_back(std::string(info.args[i].name) + " " + std::string(neox::dtype_name(wrong)));
      expect_error([&] { run(i, wrong); }, want);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, LowPrecisionTest,
                         ::testing::Combine(::testing::ValuesIn(backends_under_test()),
                                            ::testing::Values("bf16", "f16")),
                         [](const ::testing::TestParamInfo<std::tuple<std::string, std::string>>& info) {
                           return std::get<0>(info.param) + "_" + std::get<1>(info.param);
                         });

// ---------------------------------------------------------------- cpu-only

TEST(CpuBackendKernel, OptionsAndDevices) {
  neox::PluginRegistry reg({neox::test::build_plugin_dir()});
  neox::Options opts("plugins.options.cpu");
  opts.set("threads", std::int64_t{1});
  auto be = reg.make_backend("cpu", {}, {{"cpu", opts}});
  EXPECT_EQ(be->name(), "cpu");
  EXPECT_TRUE(be->device().is_cpu());
  // one thread gives the same matmul as the default
  std::vector<float> a(6 * 4, 0.5f), b(4 * 3, -0.25f);
  Tensor c = Tensor::empty(be.get(), {6, 3}, DType::f32);
  be->kernels.matmul(c, Tensor::wrap(a.data(), {6, 4}, DType::f32), Tensor::wrap(b.data(), {4, 3}, DType::f32), false,
                     false, 1.0f, 0.0f);
  EXPECT_FLOAT_EQ(c.ptr<float>()[0], -0.5f);

  char buf[8] = {};
  expect_error([&] { be->copy(buf, neox::Device{neox::DeviceType::cuda, 0}, buf + 4, be->device(), 4); }, {"cuda:0"});

  neox::Options typo("plugins.options.cpu");
  typo.set("thread", std::int64_t{2});
  expect_error([&] { reg.make_backend("cpu", {}, {{"cpu", typo}}); }, {"plugins.options.cpu.thread"});
  neox::Options negative("plugins.options.cpu");
  negative.set("threads", std::int64_t{-1});
  expect_error([&] { reg.make_backend("cpu", {}, {{"cpu", negative}}); }, {"threads"});
  neox::Options wrong_type("plugins.options.cpu");
  wrong_type.set("threads", std::string("four"));
  expect_error([&] { reg.make_backend("cpu", {}, {{"cpu", wrong_type}}); }, {"threads"});
}

// memory_stats(): the bytes handed out by allocate() now and at most since
// reset_peak_memory(), counted exactly and safely from several threads.
TEST(CpuBackendKernel, MemoryStatsCountAllocations) {
  neox::PluginRegistry reg({neox::test::build_plugin_dir()});
  auto be = reg.make_backend("cpu", {}, {});
  const auto base = be->memory_stats();
  EXPECT_EQ(base.in_use, 0u);
  EXPECT_EQ(base.reserved, base.in_use);
  {
    Tensor a = Tensor::empty(be.get(), {1000}, DType::f32);  // 4000 bytes
    Tensor b = Tensor::empty(be.get(), {10}, DType::bf16);   // 20 bytes
    auto s = be->memory_stats();
    EXPECT_EQ(s.in_use, 4020u);
    EXPECT_EQ(s.peak_in_use, 4020u);
    EXPECT_EQ(s.reserved, 4020u);
    a = Tensor();
    s = be->memory_stats();
    EXPECT_EQ(s.in_use, 20u);
    EXPECT_EQ(s.peak_in_use, 4020u);  // the peak stays until reset
    be->reset_peak_memory();
    EXPECT_EQ(be->memory_stats().peak_in_use, 20u);
    Tensor c = Tensor::empty(be.get(), {3}, DType::f64);  // 24 bytes
    EXPECT_EQ(be->memory_stats().peak_in_use, 44u);
  }
  EXPECT_EQ(be->memory_stats().in_use, 0u);

  // Several threads allocating and freeing at once: nothing lost.
  be->reset_peak_memory();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&be, t] {
      for (int i = 0; i < 2000; ++i) {
        const std::size_t bytes = static_cast<std::size_t>(64 * (1 + (i + t) % 7));
        void* p = be->allocate(bytes);
        be->deallocate(p, bytes);
      }
    });
  for (auto& th : threads) th.join();
  const auto after = be->memory_stats();
  EXPECT_EQ(after.in_use, 0u);
  EXPECT_GE(after.peak_in_use, 64u);
  EXPECT_LE(after.peak_in_use, 4u * 64u * 7u);
}

// The bf16/f16 adapter converts overlapping tensors into one temporary, so
// the f32 kernel sees the caller's aliasing: allowed aliases run in place
// (LowPrecisionTest), forbidden overlaps are still refused, naming both.
TEST(CpuBackendKernel, LowPrecisionOverlapsAreStillRefused) {
  auto be = backend_named("cpu").backend;
  ASSERT_TRUE(be);
  for (DType dt : {DType::bf16, DType::f16}) {
    SCOPED_TRACE(std::string(neox::dtype_name(dt)));
    Tensor buf = Tensor::empty(be.get(), {64}, dt);
    be->kernels.fill(buf, 0.5f);
    Tensor a = buf.slice(0, 16).view({4, 4}), c = buf.slice(8, 16).view({4, 4});  // c overlaps a
    Tensor b = Tensor::empty(be.get(), {4, 4}, dt);
    be->kernels.fill(b, 0.25f);
    expect_error([&] { be->kernels.matmul(c, a, b, false, false, 1.0f, 0.0f); }, {"matmul", "c ", "overlaps", "a "});
    // nothing was written: c still holds what it held
    Tensor h = be->to_host(buf);
    const float v = dt == DType::bf16 ? neox::bf16_to_float(h.ptr<std::uint16_t>()[20])
                                      : neox::f16_to_float(h.ptr<std::uint16_t>()[20]);
    EXPECT_EQ(v, 0.5f);
  }
}

}  // namespace
