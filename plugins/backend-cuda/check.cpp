// SPDX-License-Identifier: Apache-2.0
#include "check.h"

#include <cstdint>

namespace neox::cuda {

bool is_float_dtype(DType t) { return t == DType::f32 || t == DType::bf16 || t == DType::f16; }

void Checker::fail(const std::string& message) const { throw Error(std::string(op_) + ": " + message); }

void Checker::on_device(const Tensor& t, const char* what) const {
  if (!t.defined()) fail(std::string(what) + " is an undefined tensor");
  if (t.device() != device_) {
    std::string msg = std::string(what) + " " + t.str() + " is not on " + device_name(device_) +
                      " (the cuda backend runs on " + device_name(device_);
    if (t.device().is_cpu()) msg += "; copy host tensors to the device first, e.g. with Backend::to_device";
    msg += ")";
    fail(msg);
  }
}

void Checker::require(const Tensor& t, DType dtype, const char* what) const {
  on_device(t, what);
  if (t.dtype() != dtype) fail(std::string(what) + " " + t.str() + " must be " + std::string(dtype_name(dtype)));
}

DType Checker::activation(const Tensor& t, const char* what) const {
  on_device(t, what);
  if (!is_float_dtype(t.dtype())) fail(std::string(what) + " " + t.str() + " must be f32, bf16 or f16");
  return t.dtype();
}

MatrixShape Checker::matrix(const Tensor& t, DType dtype, const char* what) const {
  require(t, dtype, what);
  if (t.ndim() < 1) fail(std::string(what) + " " + t.str() + " must have rank >= 1");
  MatrixShape m;
  m.cols = t.dim(-1);
  m.rows = 1;
  for (int i = 0; i + 1 < t.ndim(); ++i) m.rows *= t.dim(i);
  return m;
}

void Checker::numel(const Tensor& t, DType dtype, std::int64_t n, const char* what,
                    const std::string& expected) const {
  require(t, dtype, what);
  if (t.numel() != n)
    fail(std::string(what) + " " + t.str() + " has " + std::to_string(t.numel()) + " elements, expected " +
         std::to_string(n) + " (" + expected + ")");
}

void Checker::matrix_shape(const Tensor& t, DType dtype, std::int64_t rows, std::int64_t cols,
                           const char* what, const std::string& expected) const {
  MatrixShape m = matrix(t, dtype, what);
  if (m.rows != rows || m.cols != cols)
    fail(std::string(what) + " " + t.str() + " is used as a [" + std::to_string(m.rows) + ", " +
         std::to_string(m.cols) + "] matrix, expected [" + std::to_string(rows) + ", " + std::to_string(cols) +
         "] (" + expected + ")");
}

void Checker::disjoint(const Tensor& a, const Tensor& b, const char* what_a, const char* what_b) const {
  const auto a0 = reinterpret_cast<std::uintptr_t>(a.data());
  const auto b0 = reinterpret_cast<std::uintptr_t>(b.data());
  if (a.bytes() == 0 || b.bytes() == 0) return;
  if (a0 < b0 + b.bytes() && b0 < a0 + a.bytes())
    fail(std::string(what_a) + " " + a.str() + " overlaps " + what_b + " " + b.str() +
         " in memory; this operation cannot run in place");
}

QkvShape Checker::qkv(const Tensor& qkv, int n_head, const char* what) const {
  activation(qkv, what);
  if (qkv.ndim() != 3) fail(std::string(what) + " " + qkv.str() + " must be [B, T, 3*C]");
  if (n_head <= 0) fail("n_head must be positive, got " + std::to_string(n_head));
  QkvShape s;
  s.B = qkv.dim(0);
  s.T = qkv.dim(1);
  if (qkv.dim(2) % 3 != 0) fail(std::string(what) + " " + qkv.str() + ": last dimension is not 3*C");
  s.C = qkv.dim(2) / 3;
  if (s.C == 0) fail(std::string(what) + " " + qkv.str() + " has no channels");
  s.n_head = n_head;
  if (s.C % n_head != 0)
    fail("C = " + std::to_string(s.C) + " (from " + what + " " + qkv.str() + ") is not divisible by n_head = " +
         std::to_string(n_head));
  s.hs = s.C / n_head;
  return s;
}

}  // namespace neox::cuda
