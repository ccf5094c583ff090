// SPDX-License-Identifier: Apache-2.0
// Argument checks of the cuda ops (the cpu backend's checks, adapted to the
// backend's device and to dtype roles). Every failure throws neox::Error
// "<op>: <problem>".
#pragma once

#include <cstdint>
#include <string>

#include "neox/error.h"
#include "neox/tensor.h"

namespace neox::cuda {

// A tensor used as a matrix: [prod(leading dims), last dim].
struct MatrixShape {
  std::int64_t rows = 0;
  std::int64_t cols = 0;
};

// Heads of a [B, T, 3*C] qkv tensor.
struct QkvShape {
  std::int64_t B = 0, T = 0, C = 0, n_head = 0, hs = 0;
};

bool is_float_dtype(DType t);  // f32, bf16 or f16

class Checker {
 public:
  Checker(const char* op, Device device) : op_(op), device_(device) {}

  [[noreturn]] void fail(const std::string& message) const;

  // Defined and on this backend's device.
  void on_device(const Tensor& t, const char* what) const;
  // As on_device(), and of dtype `dtype`.
  void require(const Tensor& t, DType dtype, const char* what) const;
  // As on_device(), and f32, bf16 or f16; returns the dtype.
  DType activation(const Tensor& t, const char* what) const;
  // As require(), then the matrix shape (rank >= 1).
  MatrixShape matrix(const Tensor& t, DType dtype, const char* what) const;
  // As require(), and numel == n; `expected` says where n came from.
  void numel(const Tensor& t, DType dtype, std::int64_t n, const char* what,
             const std::string& expected) const;
  // As matrix(), and exactly [rows, cols].
  void matrix_shape(const Tensor& t, DType dtype, std::int64_t rows, std::int64_t cols,
                    const char* what, const std::string& expected) const;
  // Throws when the memory of a and b overlaps.
  void disjoint(const Tensor& a, const Tensor& b, const char* what_a, const char* what_b) const;
  // qkv: on the device, activation dtype, [B, T, 3*C] with C % n_head == 0.
  QkvShape qkv(const Tensor& qkv, int n_head, const char* what) const;

  const char* op() const { return op_; }

 private:
  const char* op_;
  Device device_;
};

}  // namespace neox::cuda
