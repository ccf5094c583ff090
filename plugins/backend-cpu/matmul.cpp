// SPDX-License-Identifier: Apache-2.0
// matmul through OpenBLAS sgemm (row-major).
#include <cblas.h>

#include <cstdint>
#include <limits>
#include <string>

#include "check.h"
#include "ops.h"

namespace neox::cpu {
namespace {

// c[M,N] = alpha * op(a) @ op(b) + beta * c; a is [M,K] or [K,M] (trans_a),
// b is [K,N] or [N,K] (trans_b); lda/ldb are the stored row lengths.
void matmul_f32(float* c, const float* a, const float* b, std::int64_t M, std::int64_t N,
                std::int64_t K, std::int64_t lda, std::int64_t ldb, bool trans_a, bool trans_b,
                float alpha, float beta) {
  if (M == 0 || N == 0) return;
  if (K == 0) {  // op(a) @ op(b) is all zeros; BLAS rejects lda = 0
    for (std::int64_t i = 0; i < M * N; ++i) c[i] = beta == 0.0f ? 0.0f : beta * c[i];
    return;
  }
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(M), static_cast<blasint>(N), static_cast<blasint>(K), alpha, a,
              static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c,
              static_cast<blasint>(N));
}

std::string dims(std::int64_t r, std::int64_t c) {
  std::string s("[");  // built by appending: GCC 12 warns falsely (-Wrestrict) on "[" + std::string
  s += std::to_string(r);
  s += ", ";
  s += std::to_string(c);
  s += "]";
  return s;
}

}  // namespace

void matmul(Tensor& c, const Tensor& a, const Tensor& b, bool trans_a, bool trans_b, float alpha,
            float beta) {
  const char* op = "matmul";
  MatrixShape cm = require_matrix(c, DType::f32, op, "c");
  MatrixShape am = require_matrix(a, DType::f32, op, "a");
  MatrixShape bm = require_matrix(b, DType::f32, op, "b");
  const std::int64_t M = cm.rows, N = cm.cols;
  const std::int64_t a_m = trans_a ? am.cols : am.rows;
  const std::int64_t K = trans_a ? am.rows : am.cols;
  const std::int64_t b_k = trans_b ? bm.cols : bm.rows;
  const std::int64_t b_n = trans_b ? bm.rows : bm.cols;
  if (a_m != M)
    fail(op, std::string("op(a) = a") + (trans_a ? "^T" : "") + " is " + dims(a_m, K) + " (a is " +
                 a.str() + ") but c " + c.str() + " has M = " + std::to_string(M) + " rows");
  if (b_k != K || b_n != N)
    fail(op, std::string("op(b) = b") + (trans_b ? "^T" : "") + " is " + dims(b_k, b_n) + " (b is " +
                 b.str() + ") but op(a) @ op(b) into c needs " + dims(K, N) + " (a is " + a.str() +
                 ", c is " + c.str() + ")");
  require_disjoint(c, a, op, "c", "a");
  require_disjoint(c, b, op, "c", "b");
  constexpr std::int64_t kMax = std::numeric_limits<blasint>::max();
  if (M > kMax || N > kMax || K > kMax || am.cols > kMax || bm.cols > kMax)
    fail(op, "dimensions M = " + std::to_string(M) + ", N = " + std::to_string(N) + ", K = " +
                 std::to_string(K) + " exceed the BLAS integer range");
  matmul_f32(c.ptr<float>(), a.ptr<float>(), b.ptr<float>(), M, N, K, am.cols, bm.cols, trans_a,
             trans_b, alpha, beta);
}

}  // namespace neox::cpu
