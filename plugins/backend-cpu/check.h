// SPDX-License-Identifier: Apache-2.0
// Argument checks shared by the cpu kernels. Every failure throws neox::Error
// whose message starts with the operation's name.
#pragma once

#include <cstdint>
#include <string>

#include "neox/error.h"
#include "neox/tensor.h"

namespace neox::cpu {

// A tensor used as a matrix: [prod(leading dims), last dim].
struct MatrixShape {
  std::int64_t rows = 0;
  std::int64_t cols = 0;
};

[[noreturn]] void fail(const char* op, const std::string& message);

// t is defined, host memory, of the given dtype.
void require(const Tensor& t, DType dtype, const char* op, const char* what);
// As require(), then the tensor's matrix shape (rank >= 1).
MatrixShape require_matrix(const Tensor& t, DType dtype, const char* op, const char* what);
// As require(), and t.numel() == n; `expected` explains where n came from.
void require_numel(const Tensor& t, DType dtype, std::int64_t n, const char* op,
                   const char* what, const std::string& expected);
// As require_matrix(), and the matrix shape is exactly [rows, cols].
void require_matrix_shape(const Tensor& t, DType dtype, std::int64_t rows, std::int64_t cols,
                          const char* op, const char* what, const std::string& expected);
// Throws when the memory of a and b overlaps (for outputs that must not alias inputs).
void require_disjoint(const Tensor& a, const Tensor& b, const char* op, const char* what_a,
                      const char* what_b);

// Heads of a [B, T, 3*C] qkv tensor; checks rank 3, 3*C, and C % n_head.
struct QkvShape {
  std::int64_t B = 0, T = 0, C = 0, n_head = 0, hs = 0;
};
QkvShape require_qkv(const Tensor& qkv, int n_head, const char* op, const char* what);

}  // namespace neox::cpu
