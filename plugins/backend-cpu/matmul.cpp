// SPDX-License-Identifier: Apache-2.0
// matmul through OpenBLAS sgemm (row-major).
#include <cblas.h>

#include <cstdint>
#include <limits>
#include <string>

#include "neox/kernel_contract.h"
#include "ops.h"

namespace neox::cpu {
namespace {

// c[M,N] = alpha * op(a) @ op(b) + beta * c; a is [M,K] or [K,M] (trans_a),
// b is [K,N] or [N,K] (trans_b); lda/ldb are the stored row lengths.
void matmul_f32(float* c, const float* a, const float* b, std::int64_t M, std::int64_t N, std::int64_t K,
                std::int64_t lda, std::int64_t ldb, bool trans_a, bool trans_b, float alpha, float beta) {
  if (M == 0 || N == 0) return;
  if (K == 0) {  // op(a) @ op(b) is all zeros; BLAS rejects lda = 0
    for (std::int64_t i = 0; i < M * N; ++i) c[i] = beta == 0.0f ? 0.0f : beta * c[i];
    return;
  }
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(M), static_cast<blasint>(N), static_cast<blasint>(K), alpha, a,
              static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c, static_cast<blasint>(N));
}

}  // namespace

void matmul(Tensor& c, const Tensor& a, const Tensor& b, bool trans_a, bool trans_b, float alpha, float beta) {
  const MatmulShape s = kernel_check::matmul(Device{}, c, a, b, trans_a, trans_b, alpha, beta);
  constexpr std::int64_t kMax = std::numeric_limits<blasint>::max();
  if (s.M > kMax || s.N > kMax || s.K > kMax || s.a.cols > kMax || s.b.cols > kMax)
    KernelChecker("matmul", Device{})
        .fail("dimensions M = " + std::to_string(s.M) + ", N = " + std::to_string(s.N) +
              ", K = " + std::to_string(s.K) + " exceed the BLAS integer range");
  matmul_f32(c.ptr<float>(), a.ptr<float>(), b.ptr<float>(), s.M, s.N, s.K, s.a.cols, s.b.cols, trans_a, trans_b, alpha,
             beta);
}

}  // namespace neox::cpu
