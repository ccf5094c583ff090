// SPDX-License-Identifier: Apache-2.0
// Elementwise operations: add, axpby, fill, convert.
#include <cstdint>
#include <cstring>

#include "neox/kernel_contract.h"
#include "ops.h"

namespace neox::cpu {
namespace {

constexpr std::int64_t kParallelMin = 1 << 15;

// out[n] = a[n] + b[n]; out may alias a or b
void add_f32(float* out, const float* a, const float* b, std::int64_t n) {
#pragma omp parallel for schedule(static) if (n > kParallelMin)
  for (std::int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

// y[n] = alpha * x[n] + beta * y[n]; beta = 0 ignores what y held (as BLAS does)
void axpby_f32(float* y, const float* x, float alpha, float beta, std::int64_t n) {
  if (beta == 0.0f) {
#pragma omp parallel for schedule(static) if (n > kParallelMin)
    for (std::int64_t i = 0; i < n; ++i) y[i] = alpha * x[i];
  } else {
#pragma omp parallel for schedule(static) if (n > kParallelMin)
    for (std::int64_t i = 0; i < n; ++i) y[i] = alpha * x[i] + beta * y[i];
  }
}

template <typename T>
void fill_typed(T* t, T value, std::int64_t n) {
#pragma omp parallel for schedule(static) if (n > kParallelMin)
  for (std::int64_t i = 0; i < n; ++i) t[i] = value;
}

float load(const void* p, DType t, std::int64_t i) {
  switch (t) {
    case DType::bf16:
      return bf16_to_float(static_cast<const std::uint16_t*>(p)[i]);
    case DType::f16:
      return f16_to_float(static_cast<const std::uint16_t*>(p)[i]);
    default:
      return static_cast<const float*>(p)[i];
  }
}

void store(void* p, DType t, std::int64_t i, float v) {
  switch (t) {
    case DType::bf16:
      static_cast<std::uint16_t*>(p)[i] = float_to_bf16(v);
      break;
    case DType::f16:
      static_cast<std::uint16_t*>(p)[i] = float_to_f16(v);
      break;
    default:
      static_cast<float*>(p)[i] = v;
      break;
  }
}

// out[n] (dtype of out) = in[n] (dtype of in), through float
void convert_any(void* out, DType out_type, const void* in, DType in_type, std::int64_t n) {
#pragma omp parallel for schedule(static) if (n > kParallelMin)
  for (std::int64_t i = 0; i < n; ++i) store(out, out_type, i, load(in, in_type, i));
}

}  // namespace

void add(Tensor& out, const Tensor& a, const Tensor& b) {
  const ElementsShape s = kernel_check::add(Device{}, out, a, b);
  add_f32(out.ptr<float>(), a.ptr<float>(), b.ptr<float>(), s.n);
}

void axpby(Tensor& y, const Tensor& x, float alpha, float beta) {
  const ElementsShape s = kernel_check::axpby(Device{}, y, x, alpha, beta);
  axpby_f32(y.ptr<float>(), x.ptr<float>(), alpha, beta, s.n);
}

void fill(Tensor& t, float value) {
  const ElementsShape s = kernel_check::fill(Device{}, t, value);
  switch (s.dtype) {
    case DType::f64:
      fill_typed(t.ptr<double>(), static_cast<double>(value), s.n);
      break;
    case DType::bf16:
      fill_typed(t.ptr<std::uint16_t>(), float_to_bf16(value), s.n);
      break;
    case DType::f16:
      fill_typed(t.ptr<std::uint16_t>(), float_to_f16(value), s.n);
      break;
    default:
      fill_typed(t.ptr<float>(), value, s.n);
      break;
  }
}

void convert(Tensor& out, const Tensor& in) {
  const ElementsShape s = kernel_check::convert(Device{}, out, in);
  if (out.dtype() == in.dtype()) {  // a copy, which may overlap
    if (out.data() != in.data() && in.bytes() > 0) std::memmove(out.data(), in.data(), in.bytes());
    return;
  }
  convert_any(out.data(), out.dtype(), in.data(), in.dtype(), s.n);
}

}  // namespace neox::cpu
