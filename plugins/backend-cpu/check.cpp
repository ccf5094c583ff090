// SPDX-License-Identifier: Apache-2.0
#include "check.h"

namespace neox::cpu {

void fail(const char* op, const std::string& message) {
  throw Error(std::string(op) + ": " + message);
}

void require(const Tensor& t, DType dtype, const char* op, const char* what) {
  if (!t.defined()) fail(op, std::string(what) + " is an undefined tensor");
  if (!t.device().is_cpu())
    fail(op, std::string(what) + " " + t.str() + " is not in host memory (the cpu backend runs on the host)");
  if (t.dtype() != dtype)
    fail(op, std::string(what) + " " + t.str() + " must be " + std::string(dtype_name(dtype)));
}

MatrixShape require_matrix(const Tensor& t, DType dtype, const char* op, const char* what) {
  require(t, dtype, op, what);
  if (t.ndim() < 1) fail(op, std::string(what) + " " + t.str() + " must have rank >= 1");
  MatrixShape m;
  m.cols = t.dim(-1);
  m.rows = 1;
  for (int i = 0; i + 1 < t.ndim(); ++i) m.rows *= t.dim(i);
  return m;
}

void require_numel(const Tensor& t, DType dtype, std::int64_t n, const char* op, const char* what,
                   const std::string& expected) {
  require(t, dtype, op, what);
  if (t.numel() != n)
    fail(op, std::string(what) + " " + t.str() + " has " + std::to_string(t.numel()) +
                 " elements, expected " + std::to_string(n) + " (" + expected + ")");
}

void require_matrix_shape(const Tensor& t, DType dtype, std::int64_t rows, std::int64_t cols,
                          const char* op, const char* what, const std::string& expected) {
  MatrixShape m = require_matrix(t, dtype, op, what);
  if (m.rows != rows || m.cols != cols)
    fail(op, std::string(what) + " " + t.str() + " is used as a [" + std::to_string(m.rows) + ", " +
                 std::to_string(m.cols) + "] matrix, expected [" + std::to_string(rows) + ", " +
                 std::to_string(cols) + "] (" + expected + ")");
}

void require_disjoint(const Tensor& a, const Tensor& b, const char* op, const char* what_a,
                      const char* what_b) {
  auto a0 = reinterpret_cast<std::uintptr_t>(a.data());
  auto b0 = reinterpret_cast<std::uintptr_t>(b.data());
  if (a.bytes() == 0 || b.bytes() == 0) return;
  if (a0 < b0 + b.bytes() && b0 < a0 + a.bytes())
    fail(op, std::string(what_a) + " " + a.str() + " overlaps " + what_b + " " + b.str() +
                 " in memory; this operation cannot run in place");
}

QkvShape require_qkv(const Tensor& qkv, int n_head, const char* op, const char* what) {
  require(qkv, DType::f32, op, what);
  if (qkv.ndim() != 3) fail(op, std::string(what) + " " + qkv.str() + " must be [B, T, 3*C]");
  if (n_head <= 0) fail(op, "n_head must be positive, got " + std::to_string(n_head));
  QkvShape s;
  s.B = qkv.dim(0);
  s.T = qkv.dim(1);
  if (qkv.dim(2) % 3 != 0)
    fail(op, std::string(what) + " " + qkv.str() + ": last dimension is not 3*C");
  s.C = qkv.dim(2) / 3;
  if (s.C == 0) fail(op, std::string(what) + " " + qkv.str() + " has no channels");
  s.n_head = n_head;
  if (s.C % n_head != 0)
    fail(op, "C = " + std::to_string(s.C) + " (from " + what + " " + qkv.str() +
                 ") is not divisible by n_head = " + std::to_string(n_head));
  s.hs = s.C / n_head;
  return s;
}

}  // namespace neox::cpu
