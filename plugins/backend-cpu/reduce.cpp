// SPDX-License-Identifier: Apache-2.0
// Reductions to a host double: sum and sum of squares, of f32, bf16 or f16
// tensors (read in their own dtype, no f32 copy). A NaN or infinity in x
// gives a non-finite result: fp16 loss scaling detects overflow by it.
#include <cstdint>

#include "neox/kernel_contract.h"
#include "ops.h"

namespace neox::cpu {
namespace {

constexpr std::int64_t kParallelMin = 1 << 15;

struct F32 {
  using Storage = float;
  static double load(float v) { return v; }
};
struct BF16 {
  using Storage = std::uint16_t;
  static double load(std::uint16_t v) { return bf16_to_float(v); }
};
struct F16 {
  using Storage = std::uint16_t;
  static double load(std::uint16_t v) { return f16_to_float(v); }
};

// sum of x[n]^2 (squares = true) or of x[n], in double
template <typename T, bool squares>
double reduce(const void* data, std::int64_t n) {
  const auto* x = static_cast<const typename T::Storage*>(data);
  double acc = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : acc) if (n > kParallelMin)
  for (std::int64_t i = 0; i < n; ++i) {
    const double v = T::load(x[i]);
    acc += squares ? v * v : v;
  }
  return acc;
}

template <bool squares>
double reduce_any(const ElementsShape& s, const Tensor& x) {
  switch (s.dtype) {
    case DType::bf16:
      return reduce<BF16, squares>(x.data(), s.n);
    case DType::f16:
      return reduce<F16, squares>(x.data(), s.n);
    default:
      return reduce<F32, squares>(x.data(), s.n);
  }
}

}  // namespace

double sum_squares(const Tensor& x) { return reduce_any<true>(kernel_check::sum_squares(Device{}, x), x); }

double sum(const Tensor& x) { return reduce_any<false>(kernel_check::sum(Device{}, x), x); }

}  // namespace neox::cpu
