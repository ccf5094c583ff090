// SPDX-License-Identifier: Apache-2.0
// Elementwise operations: add, axpby, fill, convert.
#include <cstdint>
#include <cstring>
#include <string>

#include "check.h"
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
    case DType::bf16: return bf16_to_float(static_cast<const std::uint16_t*>(p)[i]);
    case DType::f16: return f16_to_float(static_cast<const std::uint16_t*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

void store(void* p, DType t, std::int64_t i, float v) {
  switch (t) {
    case DType::bf16: static_cast<std::uint16_t*>(p)[i] = float_to_bf16(v); break;
    case DType::f16: static_cast<std::uint16_t*>(p)[i] = float_to_f16(v); break;
    default: static_cast<float*>(p)[i] = v; break;
  }
}

// out[n] (dtype of out) = in[n] (dtype of in), through float
void convert_any(void* out, DType out_type, const void* in, DType in_type, std::int64_t n) {
#pragma omp parallel for schedule(static) if (n > kParallelMin)
  for (std::int64_t i = 0; i < n; ++i) store(out, out_type, i, load(in, in_type, i));
}

bool convertible(DType t) { return t == DType::f32 || t == DType::bf16 || t == DType::f16; }

}  // namespace

void add(Tensor& out, const Tensor& a, const Tensor& b) {
  require(a, DType::f32, "add", "a");
  require_numel(b, DType::f32, a.numel(), "add", "b", "as many as a " + a.str());
  require_numel(out, DType::f32, a.numel(), "add", "out", "as many as a " + a.str());
  add_f32(out.ptr<float>(), a.ptr<float>(), b.ptr<float>(), a.numel());
}

void axpby(Tensor& y, const Tensor& x, float alpha, float beta) {
  require(x, DType::f32, "axpby", "x");
  require_numel(y, DType::f32, x.numel(), "axpby", "y", "as many as x " + x.str());
  axpby_f32(y.ptr<float>(), x.ptr<float>(), alpha, beta, x.numel());
}

void fill(Tensor& t, float value) {
  if (!t.defined()) fail("fill", "t is an undefined tensor");
  if (!t.device().is_cpu()) fail("fill", "t " + t.str() + " is not in host memory");
  switch (t.dtype()) {
    case DType::f32: fill_typed(t.ptr<float>(), value, t.numel()); break;
    case DType::f64: fill_typed(t.ptr<double>(), static_cast<double>(value), t.numel()); break;
    case DType::bf16: fill_typed(t.ptr<std::uint16_t>(), float_to_bf16(value), t.numel()); break;
    case DType::f16: fill_typed(t.ptr<std::uint16_t>(), float_to_f16(value), t.numel()); break;
    default:
      fail("fill", "t " + t.str() + " must be f32, f64, bf16 or f16");
  }
}

void convert(Tensor& out, const Tensor& in) {
  const char* op = "convert";
  if (!in.defined()) fail(op, "in is an undefined tensor");
  if (!out.defined()) fail(op, "out is an undefined tensor");
  if (!in.device().is_cpu() || !out.device().is_cpu())
    fail(op, "in " + in.str() + " and out " + out.str() + " must both be in host memory");
  if (!convertible(in.dtype()) || !convertible(out.dtype()))
    fail(op, "converts among f32, bf16 and f16; got in " + in.str() + " and out " + out.str());
  if (out.numel() != in.numel())
    fail(op, "out " + out.str() + " has " + std::to_string(out.numel()) + " elements but in " + in.str() +
                 " has " + std::to_string(in.numel()));
  if (out.dtype() == in.dtype()) {
    if (out.data() != in.data() && in.bytes() > 0) std::memmove(out.data(), in.data(), in.bytes());
    return;
  }
  require_disjoint(out, in, op, "out", "in");
  convert_any(out.data(), out.dtype(), in.data(), in.dtype(), in.numel());
}

}  // namespace neox::cpu
