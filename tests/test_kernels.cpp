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
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernel_reference.h"
#include "neox/backend.h"
#include "neox/error.h"
#include "neox/kernels.h"
#include "neox/options.h"
#include "neox/registry.h"
#include "neox/tensor.h"

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
// "cpu" and every other backend plugin built into NEOX_BUILD_PLUGIN_DIR, so
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
  const std::string dir = NEOX_BUILD_PLUGIN_DIR;
  neox::PluginRegistry registry({dir});
  for (const auto& p : registry.plugins())
    if (p.kind == neox::PluginKind::backend && p.name != "cpu" && p.path.rfind(dir, 0) == 0)
      names.push_back(p.name);
  return names;
}

// One registry and one backend per name for the whole test program.
std::shared_ptr<neox::Backend> backend_named(const std::string& name) {
  struct Cache {
    neox::PluginRegistry registry{{NEOX_BUILD_PLUGIN_DIR}};
    std::map<std::string, std::shared_ptr<neox::Backend>> backends;
  };
  static Cache cache;
  auto& be = cache.backends[name];
  if (!be) be = cache.registry.make_backend(name, {}, {});
  return be;
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

#define EXPECT_CLOSE(got, want, tol)                                                         \
  do {                                                                                        \
    double err_ = rel_err((got), (want));                                                     \
    EXPECT_LT(err_, (tol)) << #got << " vs " << #want << ": relative error " << err_;         \
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
    be_ = backend_named(GetParam());
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
  struct Case { float alpha, beta; };
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
  expect_error([&] { k_->layernorm_forward(out, mean, rstd, dev(x, {B, T, C}), bad_w, dev(b, {C}), eps); },
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
  Vec fd = numeric_grad([&](const Vec& v) {
    double s = 0.0;
    for (int i = 0; i < m; ++i) s += ref::gelu(v[i]) * gs[i];
    return s;
  }, xs);
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
  Vec fd = numeric_grad([&](const Vec& v) {
    Vec y = v;
    ref::rotary(y, B, T, C, n_head, rd, 10000.0, offset, +1);
    return dot(y, w);
  }, x);
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
  expect_error([&] { k_->attention_backward(dqkv, out, tqkv, out, bad_lse, NH); },
               {"attention_backward", "lse"});
}

TEST_P(KernelTest, AttentionBackwardMatchesFiniteDifferences) {
  const int B = 1, T = 5, NH = 2, hs = 4, C = NH * hs;
  Vec qkv = random_vec(rng_, B * T * 3 * C, -2.0, 2.0), w = random_vec(rng_, B * T * C);
  Vec analytic(qkv.size());
  ref::attention_backward(analytic, w, qkv, B, T, C, NH);
  Vec fd = numeric_grad([&](const Vec& v) {
    Vec o(B * T * C), l(B * NH * T), att;
    ref::attention_forward(o, l, att, v, B, T, C, NH);
    return dot(o, w);
  }, qkv);
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
  expect_error([&] { k_->attention_decode(out, kc, vc, qkv, NH, 4); },
               {"attention_decode", "[4, 7)", "max_T = 6"});
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
  Vec fd = numeric_grad([&](const Vec& v) {
    Vec l(N), s(N);
    ref::cross_entropy_forward(l, s, v, targets, N, V);
    double total = 0.0;
    for (double x : l) total += x * dloss;
    return total;
  }, logits);
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
  expect_error([&] { k_->cross_entropy_backward(dl, tl, lse, tt, 1.0f); },
               {"cross_entropy_backward", "row 3"});
  Tensor f32_targets = dev_filled({N}, 1.0f);
  expect_error([&] { k_->cross_entropy_forward(losses, lse, tl, f32_targets); },
               {"cross_entropy_forward", "targets"});
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
  expect_error([&] { k_->embedding_forward(out, dev_ids(bad, {B, T}), ttable, false); },
               {"embedding_forward", "position 4", std::to_string(V)});
  bad[4] = -1;
  expect_error([&] { k_->embedding_forward(out, dev_ids(bad, {B, T}), ttable, false); },
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
  expect_error([&] { k_->embedding_backward(dtable, dev_ids(bad, {N}), tdout); },
               {"embedding_backward", "position 7"});

  // finite differences of sum(embedding(table) * w) with respect to the table
  const int v = 4, c = 3, n = 5;
  Ids small_ids = {1, 3, 1, 0, 1};
  Vec tab = random_vec(rng_, v * c), w = random_vec(rng_, n * c);
  Vec fd = numeric_grad([&](const Vec& t) {
    Vec o(n * c);
    ref::embedding_forward(o, small_ids, t, n, c);
    return dot(o, w);
  }, tab);
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
  for (float s : {1e-9f, -3e-6f, 65504.0f, 70000.0f, 1e30f, INFINITY, -INFINITY, 0.0f, -0.0f})
    src.push_back(s);
  const std::int64_t n = static_cast<std::int64_t>(src.size());
  Tensor f32 = be_->to_device(Tensor::wrap(src.data(), {n}, DType::f32));
  Tensor bf = Tensor::empty(be_.get(), {n}, DType::bf16), hf = Tensor::empty(be_.get(), {n}, DType::f16);
  Tensor back = Tensor::empty(be_.get(), {n}, DType::f32), bf_from_hf = Tensor::empty(be_.get(), {n}, DType::bf16);
  k_->convert(bf, f32);
  k_->convert(hf, f32);
  k_->convert(bf_from_hf, hf);
  k_->convert(back, bf);
  Tensor hbf = be_->to_host(bf), hhf = be_->to_host(hf), hback = be_->to_host(back),
         hbh = be_->to_host(bf_from_hf);
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
  expect_error([&] { k_->adamw_update(tp, short_grad, tm, tv, neox::AdamWParams{}); },
               {"adamw_update", "grad"});
}

INSTANTIATE_TEST_SUITE_P(Backends, KernelTest, ::testing::ValuesIn(backends_under_test()),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

// ---------------------------------------------------------------- cpu-only

TEST(CpuBackendKernel, OptionsAndDevices) {
  neox::PluginRegistry reg({NEOX_BUILD_PLUGIN_DIR});
  neox::Options opts("plugins.options.cpu");
  opts.set("threads", std::int64_t{1});
  auto be = reg.make_backend("cpu", {}, {{"cpu", opts}});
  EXPECT_EQ(be->name(), "cpu");
  EXPECT_TRUE(be->device().is_cpu());
  // one thread gives the same matmul as the default
  std::vector<float> a(6 * 4, 0.5f), b(4 * 3, -0.25f);
  Tensor c = Tensor::empty(be.get(), {6, 3}, DType::f32);
  be->kernels.matmul(c, Tensor::wrap(a.data(), {6, 4}, DType::f32), Tensor::wrap(b.data(), {4, 3}, DType::f32),
                     false, false, 1.0f, 0.0f);
  EXPECT_FLOAT_EQ(c.ptr<float>()[0], -0.5f);

  char buf[8] = {};
  expect_error([&] { be->copy(buf, neox::Device{neox::DeviceType::cuda, 0}, buf + 4, be->device(), 4); },
               {"cuda:0"});

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

}  // namespace
