// SPDX-License-Identifier: Apache-2.0
// Checks plugins/backend-cuda/attention.cu's kernels against a float64 reference.
// Two builds of this one file:
//  * host emulation (g++ -DATTN_EMU -Ishim ...): shim/cuda_runtime.h runs
//    the kernels' blocks, barriers and warp shuffles on the CPU;
//  * real GPU (nvcc -x cu ...): the same checks on the device, plus a timing.
#include <cuda_runtime.h>

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstring>
#include <random>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POISON(p, n) __asan_poison_memory_region(p, n)
#define UNPOISON(p, n) __asan_unpoison_memory_region(p, n)
#else
#define POISON(p, n)
#define UNPOISON(p, n)
#endif
#include <cstdio>
#include <string>
#include <vector>

#include "neox/dtype.h"
#include "neox/error.h"

#ifdef ATTN_EMU
namespace neox::cuda {
namespace {
float smem[emu::kSmemFloats];  // the kernels' `extern __shared__ float smem[]`
}
}  // namespace neox::cuda
#endif

#include "attention.cu"

void neox::cuda::note_attention_fallback(const char* why) { std::printf("note: attention fallback: %s\n", why); }

#ifndef ATTN_EMU
#define CK(x)                                                                              \
  do {                                                                                     \
    cudaError_t e_ = (x);                                                                  \
    if (e_ != cudaSuccess) {                                                               \
      std::printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__); \
      std::exit(2);                                                                        \
    }                                                                                      \
  } while (0)
#endif
static void finish() {
#ifndef ATTN_EMU
  CK(cudaGetLastError());
  CK(cudaDeviceSynchronize());
#endif
}

using neox::DType;

static std::mt19937_64 gen(42);
static int failures = 0;

// Device buffer with 0xFF (NaN) guards on both sides and a host mirror
// `bytes` (in the emulation, the device memory is the mirror itself).
struct Buf {
  static constexpr std::size_t kGuard = 4096;
  std::vector<unsigned char> bytes;
  std::size_t n = 0, es = 0;
  unsigned char* dev = nullptr;
  Buf(std::size_t n_, DType t) : bytes((n_ + 2 * kGuard) * neox::dtype_size(t), 0xFF), n(n_), es(neox::dtype_size(t)) {
#ifdef ATTN_EMU
    dev = bytes.data();
    POISON(bytes.data(), kGuard * es);  // any kernel access to a guard is an ASan error
    POISON(bytes.data() + bytes.size() - kGuard * es, kGuard * es);
#else
    CK(cudaMalloc(&dev, bytes.size()));
    upload();
#endif
  }
  ~Buf() {
#ifdef ATTN_EMU
    UNPOISON(bytes.data(), bytes.size());
#else
    cudaFree(dev);
#endif
  }
  Buf(const Buf&) = delete;
  void upload() {
#ifndef ATTN_EMU
    CK(cudaMemcpy(dev, bytes.data(), bytes.size(), cudaMemcpyHostToDevice));
#endif
  }
  void download() {
#ifndef ATTN_EMU
    CK(cudaMemcpy(bytes.data(), dev, bytes.size(), cudaMemcpyDeviceToHost));
#endif
  }
  void* p() { return dev + kGuard * es; }                                    // device data
  char* h() { return reinterpret_cast<char*>(bytes.data() + kGuard * es); }  // host mirror of the data
  bool guards_ok() const {
    UNPOISON(const_cast<unsigned char*>(bytes.data()), kGuard * es);
    UNPOISON(const_cast<unsigned char*>(bytes.data()) + bytes.size() - kGuard * es, kGuard * es);
    for (std::size_t i = 0; i < kGuard * es; ++i)
      if (bytes[i] != 0xFF || bytes[bytes.size() - 1 - i] != 0xFF) return false;
    return true;
  }
};

static float get(const Buf& b, DType t, std::size_t i) {
  const unsigned char* p = b.bytes.data() + (Buf::kGuard + i) * b.es;
  if (t == DType::f32) {
    float f;
    std::memcpy(&f, p, 4);
    return f;
  }
  std::uint16_t h;
  std::memcpy(&h, p, 2);
  return t == DType::bf16 ? neox::bf16_to_float(h) : neox::f16_to_float(h);
}
static void put(Buf& b, DType t, std::size_t i, float f) {
  unsigned char* p = b.bytes.data() + (Buf::kGuard + i) * b.es;
  if (t == DType::f32) {
    std::memcpy(p, &f, 4);
    return;
  }
  const std::uint16_t h = t == DType::bf16 ? neox::float_to_bf16(f) : neox::float_to_f16(f);
  std::memcpy(p, &h, 2);
}

// float64 causal attention: out, lse, and dqkv from dout
static void reference(const std::vector<double>& qkv, const std::vector<double>& dout, int B, int T, int H, int hs,
                      std::vector<double>& out, std::vector<double>& lse, std::vector<double>& dqkv) {
  const std::int64_t C = std::int64_t(H) * hs, C3 = 3 * C;
  const double scale = 1.0 / std::sqrt(double(hs));
  out.assign(std::size_t(B) * T * C, 0.0);
  lse.assign(std::size_t(B) * H * T, 0.0);
  dqkv.assign(std::size_t(B) * T * C3, 0.0);
  std::vector<double> P(std::size_t(T) * T), dS(std::size_t(T) * T);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h) {
      auto q = [&](int t, int d) { return qkv[(std::size_t(b) * T + t) * C3 + h * hs + d]; };
      auto k = [&](int t, int d) { return qkv[(std::size_t(b) * T + t) * C3 + C + h * hs + d]; };
      auto v = [&](int t, int d) { return qkv[(std::size_t(b) * T + t) * C3 + 2 * C + h * hs + d]; };
      auto g = [&](int t, int d) { return dout[(std::size_t(b) * T + t) * C + h * hs + d]; };
      for (int t = 0; t < T; ++t) {
        double mx = -INFINITY;
        std::vector<double> s(t + 1);
        for (int j = 0; j <= t; ++j) {
          double dot = 0;
          for (int d = 0; d < hs; ++d) dot += q(t, d) * k(j, d);
          s[j] = dot * scale;
          mx = std::max(mx, s[j]);
        }
        double sum = 0;
        for (int j = 0; j <= t; ++j) sum += std::exp(s[j] - mx);
        lse[(std::size_t(b) * H + h) * T + t] = mx + std::log(sum);
        for (int j = 0; j <= t; ++j) P[std::size_t(t) * T + j] = std::exp(s[j] - mx) / sum;
        for (int d = 0; d < hs; ++d) {
          double o = 0;
          for (int j = 0; j <= t; ++j) o += P[std::size_t(t) * T + j] * v(j, d);
          out[(std::size_t(b) * T + t) * C + h * hs + d] = o;
        }
        double D = 0;
        std::vector<double> dp(t + 1);
        for (int j = 0; j <= t; ++j) {
          double x = 0;
          for (int d = 0; d < hs; ++d) x += g(t, d) * v(j, d);
          dp[j] = x;
          D += P[std::size_t(t) * T + j] * x;
        }
        for (int j = 0; j <= t; ++j) dS[std::size_t(t) * T + j] = P[std::size_t(t) * T + j] * (dp[j] - D);
      }
      for (int t = 0; t < T; ++t)
        for (int d = 0; d < hs; ++d) {
          double dq = 0, dk = 0, dv = 0;
          for (int j = 0; j <= t; ++j) dq += dS[std::size_t(t) * T + j] * k(j, d);
          for (int i = t; i < T; ++i) {
            dk += dS[std::size_t(i) * T + t] * q(i, d);
            dv += P[std::size_t(i) * T + t] * g(i, d);
          }
          const std::size_t row = (std::size_t(b) * T + t) * C3 + h * hs + d;
          dqkv[row] = dq * scale;
          dqkv[row + C] = dk * scale;
          dqkv[row + 2 * C] = dv;
        }
    }
}

struct Err {
  // ||got - want|| / ||want||, with ||want|| at least 0.1 per element's RMS (T = 1 has dq = dk = 0)
  double num = 0, den = 0;
  long n = 0;
  bool finite = true;
  void add(double got, double want) {
    if (!std::isfinite(got)) finite = false;
    num += (got - want) * (got - want);
    den += want * want;
    ++n;
  }
  double rel() const { return finite ? std::sqrt(num / std::max(den, 1e-2 * double(n))) : INFINITY; }
};

static void expect(bool ok, const std::string& what) {
  if (!ok) {
    ++failures;
    std::printf("  FAIL: %s\n", what.c_str());
  }
}

// f32: rounding grows with T and the scale of the scores (2.4e-6 seen at
// T = 2048, q scaled by 4, on an H200): 1e-5 is still 100x under f16's.
static double tol_for(DType t) { return t == DType::f32 ? 1e-5 : t == DType::bf16 ? 3e-2 : 4e-3; }

static void run_case(DType dt, int B, int T, int H, int hs, double qscale) {
  const std::int64_t C = std::int64_t(H) * hs, C3 = 3 * C;
  const std::size_t nqkv = std::size_t(B) * T * C3, nout = std::size_t(B) * T * C, nst = std::size_t(B) * H * T;
  std::normal_distribution<double> nd(0.0, 1.0);
  Buf qkv(nqkv, dt), dout(nout, dt), out(nout, dt), dqkv(nqkv, dt), lse(nst, DType::f32), D(nst, DType::f32);
  std::vector<double> hq(nqkv), hg(nout);
  for (std::size_t i = 0; i < nqkv; ++i) {
    const std::int64_t col = std::int64_t(i % C3);
    put(qkv, dt, i, float(nd(gen) * (col < C ? qscale : 1.0)));
    hq[i] = get(qkv, dt, i);  // the reference sees the rounded inputs
  }
  for (std::size_t i = 0; i < nout; ++i) {
    put(dout, dt, i, float(nd(gen)));
    hg[i] = get(dout, dt, i);
  }
  qkv.upload();
  dout.upload();
  std::vector<double> rout, rlse, rd;
  reference(hq, hg, B, T, H, hs, rout, rlse, rd);

  neox::cuda::attention_forward(nullptr, dt, out.p(), static_cast<float*>(lse.p()), qkv.p(), B, T, H, hs);
  neox::cuda::attention_backward(nullptr, dt, dqkv.p(), dout.p(), qkv.p(), out.p(), static_cast<const float*>(lse.p()),
                                 static_cast<float*>(D.p()), B, T, H, hs);
  finish();
  for (Buf* b : {&qkv, &dout, &out, &dqkv, &lse, &D}) b->download();
  Err eo, el, eq, ek, ev;
  for (std::size_t i = 0; i < nout; ++i) eo.add(get(out, dt, i), rout[i]);
  for (std::size_t i = 0; i < nst; ++i) el.add(get(lse, DType::f32, i), rlse[i]);
  for (std::size_t i = 0; i < nqkv; ++i) {
    const std::int64_t col = std::int64_t(i % C3);
    (col < C ? eq : col < 2 * C ? ek : ev).add(get(dqkv, dt, i), rd[i]);
  }
  const double tol = tol_for(dt);
  std::printf("%-4s B=%d T=%-4d H=%d hs=%-3d qs=%-3g  out %.2e lse %.2e dq %.2e dk %.2e dv %.2e\n",
              std::string(neox::dtype_name(dt)).c_str(), B, T, H, hs, qscale, eo.rel(), el.rel(), eq.rel(), ek.rel(),
              ev.rel());
  expect(eo.rel() < tol && el.rel() < (dt == DType::f32 ? 2e-6 : 1e-5) && eq.rel() < tol && ek.rel() < tol &&
             ev.rel() < tol,
         "error above tolerance");
  expect(qkv.guards_ok() && dout.guards_ok() && out.guards_ok() && dqkv.guards_ok() && lse.guards_ok() && D.guards_ok(),
         "a guard zone was written");

  // decode in chunks: bit-identical to the forward where both run the
  // CUDA-core kernel, within the dtype's tolerance where the forward ran on
  // the tensor cores; caches filled, nothing else touched
  const bool tensor_cores = neox::cuda::attention_uses_tensor_cores(dt, hs);
  Err edec;
  const std::int64_t maxT = T + 3;
  Buf kc(std::size_t(B) * H * maxT * hs, dt), vc(std::size_t(B) * H * maxT * hs, dt);
  const int sizes[] = {1, 2, 7, 1, 32, 5, 64, 13};
  std::int64_t pos = 0;
  bool same = true;
  for (int c = 0; pos < T; ++c) {
    const int Tq = int(std::min<std::int64_t>(sizes[c % 8], T - pos));
    Buf cq(std::size_t(B) * Tq * C3, dt), co(std::size_t(B) * Tq * C, dt);
    for (int b = 0; b < B; ++b)
      std::memcpy(cq.h() + std::size_t(b) * Tq * C3 * cq.es, qkv.h() + (std::size_t(b) * T + pos) * C3 * cq.es,
                  std::size_t(Tq) * C3 * cq.es);
    cq.upload();
    neox::cuda::attention_decode(nullptr, dt, co.p(), kc.p(), vc.p(), cq.p(), B, Tq, H, hs, maxT, pos);
    finish();
    cq.download();
    co.download();
    for (int b = 0; b < B; ++b) {
      if (std::memcmp(co.h() + std::size_t(b) * Tq * C * co.es, out.h() + (std::size_t(b) * T + pos) * C * co.es,
                      std::size_t(Tq) * C * co.es) != 0)
        same = false;
      for (std::size_t i = 0; i < std::size_t(Tq) * C; ++i)
        edec.add(get(co, dt, std::size_t(b) * Tq * C + i), get(out, dt, (std::size_t(b) * T + pos) * C + i));
    }
    expect(cq.guards_ok() && co.guards_ok(), "decode: a guard zone was written");
    pos += Tq;
  }
  if (tensor_cores)
    expect(edec.rel() < tol, "decode in chunks differs from the tensor-core forward beyond the tolerance");
  else
    expect(same, "decode in chunks differs from the forward");
  kc.download();
  vc.download();
  bool cache_ok = kc.guards_ok() && vc.guards_ok();
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h)
      for (std::int64_t t = 0; t < maxT; ++t)
        for (int d = 0; d < hs; ++d) {
          const std::size_t ci = ((std::size_t(b) * H + h) * maxT + t) * hs + d;
          const unsigned char* kp = kc.bytes.data() + (Buf::kGuard + ci) * kc.es;
          const unsigned char* vp = vc.bytes.data() + (Buf::kGuard + ci) * vc.es;
          if (t < T) {
            const std::size_t qi = (std::size_t(b) * T + t) * C3 + C + h * hs + d;
            const unsigned char* src = qkv.bytes.data() + (Buf::kGuard + qi) * kc.es;
            if (std::memcmp(kp, src, kc.es) || std::memcmp(vp, src + C * kc.es, kc.es)) cache_ok = false;
          } else {
            for (std::size_t e = 0; e < kc.es; ++e)
              if (kp[e] != 0xFF || vp[e] != 0xFF) cache_ok = false;
          }
        }
  expect(cache_ok, "decode: cache contents wrong");
}

template <typename F>
static bool throws(F f, const char* needle) {
  try {
    f();
  } catch (const neox::Error& e) {
    return std::string(e.what()).find(needle) != std::string::npos;
  }
  return false;
}

#ifndef ATTN_EMU
// Milliseconds per call of fn (after a warm-up), on the default stream.
template <typename F>
static float time_ms(F fn, int reps = 10) {
  fn();
  finish();
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  CK(cudaEventRecord(a));
  for (int i = 0; i < reps; ++i) fn();
  CK(cudaEventRecord(b));
  CK(cudaEventSynchronize(b));
  float ms = 0;
  CK(cudaEventElapsedTime(&ms, a, b));
  return ms / reps;
}

static void bench(DType dt, int B, int T, int H, int hs) {
  const std::int64_t C = std::int64_t(H) * hs;
  Buf qkv(std::size_t(B) * T * 3 * C, dt), out(std::size_t(B) * T * C, dt), dqkv(std::size_t(B) * T * 3 * C, dt),
      lse(std::size_t(B) * H * T, DType::f32), D(std::size_t(B) * H * T, DType::f32);
  std::normal_distribution<double> nd(0.0, 1.0);
  for (std::size_t i = 0; i < qkv.n; ++i) put(qkv, dt, i, float(nd(gen)));
  qkv.upload();
  const float f = time_ms(
      [&] { neox::cuda::attention_forward(nullptr, dt, out.p(), static_cast<float*>(lse.p()), qkv.p(), B, T, H, hs); });
  const float bw = time_ms([&] {
    neox::cuda::attention_backward(nullptr, dt, dqkv.p(), out.p(), qkv.p(), out.p(), static_cast<const float*>(lse.p()),
                                   static_cast<float*>(D.p()), B, T, H, hs);
  });
  // one-token decode steps at the end of a full cache
  Buf kc(std::size_t(B) * H * T * hs, dt), vc(std::size_t(B) * H * T * hs, dt), q1(std::size_t(B) * 3 * C, dt),
      o1(std::size_t(B) * C, dt);
  const float dec = time_ms(
      [&] { neox::cuda::attention_decode(nullptr, dt, o1.p(), kc.p(), vc.p(), q1.p(), B, 1, H, hs, T, T - 1); });
  const double flops = 4.0 * B * H * (double(T) * (T + 1) / 2) * hs;  // forward: QK and PV, causal
  std::printf(
      "bench %-4s B=%d T=%d H=%d hs=%d: forward %.3f ms (%.1f TFLOP/s), backward %.3f ms (%.1f TFLOP/s), "
      "decode step %.3f ms\n",
      std::string(neox::dtype_name(dt)).c_str(), B, T, H, hs, f, flops / f / 1e9, bw, 2.5 * flops / bw / 1e9, dec);
}
#endif

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::string(argv[1]) == "quick";
  const bool mini = argc > 1 && std::string(argv[1]) == "mini";
  struct Case {
    int B, T, H, hs;
    double qs;
  };
  std::vector<Case> cases = {
      {1, 1, 1, 64, 1},  {2, 37, 3, 80, 1},  {1, 37, 2, 256, 1},  {2, 5, 2, 16, 1},   {1, 130, 2, 32, 1},
      {1, 70, 1, 64, 1}, {1, 33, 1, 128, 1}, {1, 45, 1, 96, 8},   {1, 66, 2, 1, 1},   {1, 40, 1, 200, 1},
      {3, 17, 5, 48, 4}, {1, 1, 2, 256, 1},  {1, 100, 1, 64, 12}, {1, 129, 1, 33, 1},
  };
  if (mini) cases = {{2, 37, 3, 80, 1}, {1, 70, 1, 64, 1}, {1, 130, 2, 32, 1}, {1, 37, 2, 256, 1}, {1, 1, 1, 64, 1}};
#ifdef ATTN_EMU
  emu::smem_ptr = neox::cuda::smem;
  // mini: f32 under the reverse and random schedules, and bf16 and f16 on
  // two cases that run the tensor-core kernels (attention_mma.cuh).
  const std::vector<int> modes = std::vector<int>{0, 1, 2};
  if (!quick && !mini) cases.push_back({1, 300, 1, 96, 1});
#else
  const std::vector<int> modes = {0};
  if (quick)  // long rows through the tensor-core kernels (and f32's CUDA cores)
    for (Case c : {Case{1, 1000, 2, 64, 1}, Case{1, 2048, 1, 128, 2}}) cases.push_back(c);
  if (!quick && !mini)
    for (Case c : {Case{1, 300, 1, 96, 1}, Case{2, 1000, 3, 64, 1}, Case{1, 777, 2, 256, 1}, Case{1, 2048, 1, 128, 4},
                   Case{1, 1500, 2, 80, 2}})
      cases.push_back(c);
#endif
  for (int mode : modes) {
#ifdef ATTN_EMU
    emu::schedule_mode = mode;
    std::printf("---- schedule %s\n", mode == 0 ? "forward" : mode == 1 ? "reverse" : "random");
#endif
    for (const Case& c : cases)
      for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
        if (mode != 0 && dt != DType::f32) continue;
        if (mini && mode == 0 && (dt == DType::f32 || !neox::cuda::attention_uses_tensor_cores(dt, c.hs))) continue;
        run_case(dt, c.B, c.T, c.H, c.hs, c.qs);
      }
  }
  // errors and empty calls
#ifdef ATTN_EMU
  const long before = emu::launches;
#endif
  neox::cuda::attention_forward(nullptr, DType::f32, nullptr, nullptr, nullptr, 0, 5, 2, 64);
  neox::cuda::attention_backward(nullptr, DType::f32, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 2, 0, 2,
                                 64);
  neox::cuda::attention_decode(nullptr, DType::f32, nullptr, nullptr, nullptr, nullptr, 2, 0, 2, 64, 8, 8);
#ifdef ATTN_EMU
  expect(emu::launches == before, "empty calls launched kernels");
#endif
  expect(throws([] { neox::cuda::attention_forward(nullptr, DType::f32, nullptr, nullptr, nullptr, 1, 5, 2, 257); },
                "head size 257"),
         "hs 257");
  expect(throws([] { neox::cuda::attention_forward(nullptr, DType::f32, nullptr, nullptr, nullptr, 1, 5, 2, 0); },
                "head size 0"),
         "hs 0");
  expect(throws([] { neox::cuda::attention_forward(nullptr, DType::i32, nullptr, nullptr, nullptr, 1, 5, 2, 64); },
                "dtype must be"),
         "dtype");
  expect(throws(
             [] {
               neox::cuda::attention_decode(nullptr, DType::f32, nullptr, nullptr, nullptr, nullptr, 1, 2, 2, 64, 8, 7);
             },
             "do not fit"),
         "decode past max_T");
  expect(throws(
             [] {
               neox::cuda::attention_forward(nullptr, DType::f32, nullptr, nullptr, nullptr, 1, 65535 * 16 + 1, 1, 256);
             },
             "too many"),
         "too many rows");
#ifndef ATTN_EMU
  finish();
  if (!mini) {                             // quick (the GPU check's mode) and full
    bench(DType::bf16, 8, 2048, 12, 64);   // pythia-160m-like
    bench(DType::bf16, 8, 2048, 16, 128);  // pythia-1.4b-like
    bench(DType::bf16, 4, 2048, 8, 256);   // pythia-1b-like
    bench(DType::f32, 8, 2048, 12, 64);
  }
#endif
  std::printf("%s (%d failures)\n", failures ? "FAILED" : "ALL PASSED", failures);
  return failures ? 1 : 0;
}
