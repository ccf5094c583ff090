// SPDX-License-Identifier: Apache-2.0
// Reductions to a host double: sum and sum of squares.
#include <cstdint>

#include "check.h"
#include "ops.h"

namespace neox::cpu {
namespace {

constexpr std::int64_t kParallelMin = 1 << 15;

// sum of x[n]^2, in double
double sum_squares_f32(const float* x, std::int64_t n) {
  double acc = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : acc) if (n > kParallelMin)
  for (std::int64_t i = 0; i < n; ++i) acc += static_cast<double>(x[i]) * x[i];
  return acc;
}

// sum of x[n], in double
double sum_f32(const float* x, std::int64_t n) {
  double acc = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : acc) if (n > kParallelMin)
  for (std::int64_t i = 0; i < n; ++i) acc += x[i];
  return acc;
}

}  // namespace

double sum_squares(const Tensor& x) {
  require(x, DType::f32, "sum_squares", "x");
  return sum_squares_f32(x.ptr<float>(), x.numel());
}

double sum(const Tensor& x) {
  require(x, DType::f32, "sum", "x");
  return sum_f32(x.ptr<float>(), x.numel());
}

}  // namespace neox::cpu
