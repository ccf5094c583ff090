// SPDX-License-Identifier: Apache-2.0
// kernels plugin `fast-gelu`: GeLU forward and backward for the cpu backend,
// as one of the two usual approximations of the exact (erf) GeLU:
//   approximation = "tanh" (default): GPT-2's gelu_new, PyTorch's
//     gelu(approximate="tanh"), Hugging Face's gelu_pytorch_tanh:
//       gelu(x) = 0.5 x (1 + tanh(u)) = x * sigmoid(2u),
//       u = sqrt(2/pi) (x + 0.044715 x^3)
//     within 4.8e-4 of the exact GeLU everywhere (absolute);
//   approximation = "sigmoid": quick_gelu, x * sigmoid(1.702 x), within 2.1e-2.
// Both are written with exp alone (sigmoid(z) = 1 / (1 + e^-z)) and e^z by
// range reduction and a polynomial in plain float arithmetic, so the
// compiler vectorises the loops (the built-in calls erf and exp of libm per
// element; CMakeLists.txt adds -fno-trapping-math, without which GCC keeps
// the selects below as branches); blocks of elements are spread over OpenMP threads above
// `min_parallel` elements, as the built-in does. f32, bf16 and f16 tensors
// (kernels.h, "Precision"): bf16 and f16 go through f32 per block and are
// rounded once, to nearest even, when written.
//
// Select it for both ops, so that forward and backward agree:
//   [plugins.kernels]
//   gelu_forward = "fast-gelu"
//   gelu_backward = "fast-gelu"
//   [plugins.options.fast-gelu]
//   approximation = "tanh"   # or "sigmoid"
//   min_parallel = 16384     # elements below which one thread does the work
//
// The provider counts its calls and logs them when the backend that uses it
// is destroyed (end of a run), so a log shows that it ran (and how much).
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstdint>
#include <cstring>
#include <string>

#include "neox/backend.h"
#include "neox/dtype.h"
#include "neox/kernel_contract.h"
#include "neox/options.h"
#include "neox/plugin.h"

namespace {

using neox::DType;
using neox::Tensor;

constexpr std::int64_t kBlock = 2048;  // elements per block: 3 f32 blocks fit in L1

enum class Approximation { tanh, sigmoid };

// e^z in f32 for any z (NaN and infinities included: clamped to
// [-87, 88], so the result is finite and positive; callers multiply by x,
// which carries a NaN through). z = n ln2 + r with |r| <= ln2/2 (Cody-Waite,
// round to nearest by the 1.5 * 2^23 trick), e^r by Cephes' expf polynomial
// (relative error ~1e-7), 2^n by writing the exponent bits.
inline float exp_f32(float z) {
  z = z < 88.0f ? z : 88.0f;  // NaN -> 88
  z = z > -87.0f ? z : -87.0f;
  const float n = (z * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = (z - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const std::int32_t bits = (static_cast<std::int32_t>(n) + 127) << 23;
  return p * std::bit_cast<float>(bits);
}

constexpr float kSqrt2OverPi = 0.79788456080286535588f;
constexpr float kCubic = 0.044715f;
constexpr float kQuick = 1.702f;

// 1 / (1 + e^-z), exactly 0 at and below z = -87 (and for a NaN z).
inline float sigmoid_f32(float z) {
  const float s = 1.0f / (1.0f + exp_f32(-z));
  return z > -87.0f ? s : 0.0f;
}

// y[i] = gelu(x[i]) = x sigmoid(z(x)). As the exact GeLU of the cpu
// backend: gelu(+inf) = +inf, gelu(-inf) = NaN (-inf * 0), NaN stays NaN.
template <Approximation A>
void forward_block(float* __restrict y, const float* __restrict x, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    const float z = A == Approximation::tanh ? 2.0f * kSqrt2OverPi * (v + kCubic * v * v * v) : kQuick * v;
    y[i] = v * sigmoid_f32(z);
  }
}

// g[i] = gelu'(x[i]) * dy[i], gelu'(x) = s + x s (1 - s) z'(x), s = sigmoid(z(x)).
// Where s saturates (s (1 - s) = 0) the second term is 0, even where x z'(x)
// overflows; an infinite or NaN x gives NaN (x - x), as the exact GeLU's
// derivative does in the cpu backend, so that overflow checks see it.
template <Approximation A>
void backward_block(float* __restrict g, const float* __restrict x, const float* __restrict dy, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    float z, dz;  // the sigmoid's argument and its derivative
    if constexpr (A == Approximation::tanh) {
      z = 2.0f * kSqrt2OverPi * (v + kCubic * v * v * v);
      dz = 2.0f * kSqrt2OverPi * (1.0f + 3.0f * kCubic * v * v);
    } else {
      z = kQuick * v;
      dz = kQuick;
    }
    const float s = sigmoid_f32(z);
    const float d = s * (1.0f - s), t = v * d * dz;
    g[i] = (s + (d > 0.0f ? t : 0.0f)) * dy[i] + (v - v);
  }
}

// bf16 <-> f32 as the core does it (neox/dtype.h): widening is exact;
// narrowing rounds to nearest even and keeps NaNs NaN. f16 uses the core's
// functions.
inline float from_bf16(std::uint16_t h) { return std::bit_cast<float>(static_cast<std::uint32_t>(h) << 16); }
inline std::uint16_t to_bf16(float f) {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(f);
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu))
    return static_cast<std::uint16_t>((bits >> 16) | 0x40u);
  return static_cast<std::uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

// Elements [off, off + n) of t as f32: a pointer into t when it is f32,
// else converted into buf.
const float* load(const Tensor& t, std::int64_t off, std::int64_t n, float* buf) {
  switch (t.dtype()) {
    case DType::f32:
      return t.ptr<const float>() + off;
    case DType::bf16: {
      const std::uint16_t* p = t.ptr<const std::uint16_t>() + off;
      for (std::int64_t i = 0; i < n; ++i) buf[i] = from_bf16(p[i]);
      return buf;
    }
    default: {
      const std::uint16_t* p = t.ptr<const std::uint16_t>() + off;
      for (std::int64_t i = 0; i < n; ++i) buf[i] = neox::f16_to_float(p[i]);
      return buf;
    }
  }
}

void store(Tensor& t, std::int64_t off, std::int64_t n, const float* buf) {
  switch (t.dtype()) {
    case DType::f32:
      std::memcpy(t.ptr<float>() + off, buf, static_cast<std::size_t>(n) * sizeof(float));
      return;
    case DType::bf16: {
      std::uint16_t* p = t.ptr<std::uint16_t>() + off;
      for (std::int64_t i = 0; i < n; ++i) p[i] = to_bf16(buf[i]);
      return;
    }
    default: {
      std::uint16_t* p = t.ptr<std::uint16_t>() + off;
      for (std::int64_t i = 0; i < n; ++i) p[i] = neox::float_to_f16(buf[i]);
      return;
    }
  }
}

class FastGelu final : public neox::KernelProvider {
 public:
  FastGelu(Approximation approximation, std::int64_t min_parallel)
      : approximation_(approximation), min_parallel_(min_parallel) {}

  ~FastGelu() override {
    if (forward_calls_.load() + backward_calls_.load() == 0) return;
    spdlog::info("fast-gelu ({} approximation): {} gelu_forward and {} gelu_backward calls, {} elements",
                 approximation_ == Approximation::tanh ? "tanh" : "sigmoid", forward_calls_.load(),
                 backward_calls_.load(), elements_.load());
  }

  neox::DeviceType device() const override { return neox::DeviceType::cpu; }

  void register_kernels(neox::Kernels& table) override {
    table.gelu_forward = [this](Tensor& out, const Tensor& inp) {
      // The SDK's checks of the op (neox/kernel_contract.h): host tensors, one
      // dtype (f32, bf16 or f16), as many elements; the same errors as the cpu backend's.
      neox::kernel_check::gelu_forward(neox::Device{}, out, inp);
      count(forward_calls_, inp.numel());
      if (approximation_ == Approximation::tanh)
        forward<Approximation::tanh>(out, inp);
      else
        forward<Approximation::sigmoid>(out, inp);
    };
    table.gelu_backward = [this](Tensor& dinp, const Tensor& inp, const Tensor& dout) {
      neox::kernel_check::gelu_backward(neox::Device{}, dinp, inp, dout);
      count(backward_calls_, inp.numel());
      if (approximation_ == Approximation::tanh)
        backward<Approximation::tanh>(dinp, inp, dout);
      else
        backward<Approximation::sigmoid>(dinp, inp, dout);
    };
  }

 private:
  void count(std::atomic<std::int64_t>& calls, std::int64_t n) {
    calls.fetch_add(1, std::memory_order_relaxed);
    elements_.fetch_add(n, std::memory_order_relaxed);
  }

  // out may alias inp: each block is read whole before it is written.
  template <Approximation A>
  void forward(Tensor& out, const Tensor& inp) const {
    const std::int64_t n = inp.numel(), blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (n > min_parallel_)
    for (std::int64_t b = 0; b < blocks; ++b) {
      alignas(64) float xb[kBlock], yb[kBlock];
      const std::int64_t off = b * kBlock, len = std::min(kBlock, n - off);
      forward_block<A>(yb, load(inp, off, len, xb), len);
      store(out, off, len, yb);
    }
  }

  // dinp may alias dout.
  template <Approximation A>
  void backward(Tensor& dinp, const Tensor& inp, const Tensor& dout) const {
    const std::int64_t n = inp.numel(), blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (n > min_parallel_)
    for (std::int64_t b = 0; b < blocks; ++b) {
      alignas(64) float xb[kBlock], gb[kBlock], db[kBlock];
      const std::int64_t off = b * kBlock, len = std::min(kBlock, n - off);
      const float* x = load(inp, off, len, xb);
      const float* dy = load(dout, off, len, gb);
      backward_block<A>(db, x, dy, len);
      store(dinp, off, len, db);
    }
  }

  Approximation approximation_;
  std::int64_t min_parallel_;
  std::atomic<std::int64_t> forward_calls_{0}, backward_calls_{0}, elements_{0};
};

neox::KernelProvider* make_fast_gelu(const neox::Options& options) {
  const std::string approximation = options.get_string("approximation", "tanh", {"tanh", "sigmoid"});
  const std::int64_t min_parallel = options.get_int("min_parallel", 16384, 0, std::int64_t{1} << 40);
  options.reject_unknown();
  spdlog::info("fast-gelu: gelu with the {} approximation for the cpu backend", approximation);
  return new FastGelu(approximation == "tanh" ? Approximation::tanh : Approximation::sigmoid, min_parallel);
}

}  // namespace

NEOX_PLUGIN(kernels, "fast-gelu", "1.0",
            "example: vectorised tanh- (or sigmoid-) approximation GeLU, forward and backward, for the cpu backend",
            &make_fast_gelu)
