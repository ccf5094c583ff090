// SPDX-License-Identifier: Apache-2.0
// matmul through cuBLASLt.
//
// Row-major c[M,N] = alpha op(a) op(b) + beta c is, in cuBLASLt's
// column-major terms, C^T[N,M] = op(b)^T op(a)^T: the row-major storage of a
// matrix read column-major is its transpose. So cuBLASLt's A is our b (its
// storage is the column-major [b.cols, b.rows] matrix, ld b.cols, transposed
// when trans_b), its B is our a (column-major [a.cols, a.rows], ld a.cols,
// transposed when trans_a), and C = D is our c (column-major [N, M], ld N).
//
// Types: a, b f32 -> c f32, compute CUBLAS_COMPUTE_32F (true fp32; TF32 only
// with the allow_tf32 option); a, b bf16 or f16 -> c the same dtype or f32,
// compute CUBLAS_COMPUTE_32F. Scale type f32 (alpha, beta are host floats).
// beta = 0: cuBLASLt does not read C, so NaNs there are ignored.
//
// The descriptors and the heuristic's first algorithm are cached per (shape,
// transposes, dtypes, leading dimensions, pointer alignments). When the
// heuristic offers nothing (or K = 0) a plain tiled kernel does the product
// (with a warning in the log).
#include <cstdint>
#include <string>

#include <spdlog/spdlog.h>

#include "cuda_check.h"
#include "launch.h"
#include "neox/error.h"
#include "neox/kernel_contract.h"
#include "ops.h"

namespace neox::cuda {
namespace {

constexpr std::size_t kMaxPlans = 4096;

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::f32:
      return CUDA_R_32F;
    case DType::bf16:
      return CUDA_R_16BF;
    case DType::f16:
      return CUDA_R_16F;
    default:
      break;
  }
  throw Error("matmul: no cuBLASLt type for " + std::string(dtype_name(t)));
}

// The largest power of two (at most 256) that divides the address.
std::uint32_t alignment_of(const void* p) {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  std::uint32_t align = 256;
  while (align > 1 && (a % align) != 0) align /= 2;
  return align;
}

class Preference {
 public:
  Preference() { NEOX_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref_)); }
  ~Preference() { (void)cublasLtMatmulPreferenceDestroy(pref_); }
  Preference(const Preference&) = delete;
  Preference& operator=(const Preference&) = delete;
  template <typename V>
  void set(cublasLtMatmulPreferenceAttributes_t attr, V value) {
    NEOX_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref_, attr, &value, sizeof value));
  }
  cublasLtMatmulPreference_t get() const { return pref_; }

 private:
  cublasLtMatmulPreference_t pref_ = nullptr;
};

struct Problem {
  std::int64_t M, N, K;
  std::int64_t a_rows, a_cols, b_rows, b_cols;  // stored (row-major) shapes of a and b
  bool trans_a, trans_b;
  DType ab, c;
  std::uint32_t align_a, align_b, align_c;
};

std::unique_ptr<MatmulPlan> make_plan(Context& ctx, const Problem& p) {
  auto plan = std::make_unique<MatmulPlan>();
  const bool tf32 = p.ab == DType::f32 && ctx.allow_tf32();
  NEOX_CUBLAS_CHECK(
      cublasLtMatmulDescCreate(&plan->desc, tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t op_a = p.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLASLt's A is our b
  const cublasOperation_t op_b = p.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLASLt's B is our a
  NEOX_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof op_a));
  NEOX_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof op_b));
  const cudaDataType_t ab_type = cuda_type(p.ab);
  NEOX_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->a, ab_type, static_cast<std::uint64_t>(p.b_cols),
                                               static_cast<std::uint64_t>(p.b_rows), p.b_cols));
  NEOX_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->b, ab_type, static_cast<std::uint64_t>(p.a_cols),
                                               static_cast<std::uint64_t>(p.a_rows), p.a_cols));
  NEOX_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->c, cuda_type(p.c), static_cast<std::uint64_t>(p.N),
                                               static_cast<std::uint64_t>(p.M), p.N));
  Preference pref;
  pref.set(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, static_cast<std::uint64_t>(ctx.workspace_bytes()));
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, p.align_b);
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, p.align_a);
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, p.align_c);
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, p.align_c);
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(ctx.cublaslt(), plan->desc, plan->a, plan->b, plan->c,
                                                           plan->c, pref.get(), 1, &result, &found);
  if (st == CUBLAS_STATUS_SUCCESS && found >= 1 && result.state == CUBLAS_STATUS_SUCCESS) {
    plan->algo = result.algo;
    return plan;
  }
  // No algorithm: correct but slow, so say so (once per cached shape).
  plan->fallback = true;
  spdlog::warn(
      "cuda backend: cuBLASLt has no algorithm for matmul M={} N={} K={} trans_a={} trans_b={} {}x{}->{} "
      "(alignments a={} b={} c={}; {}); using the plain tiled kernel",
      p.M, p.N, p.K, p.trans_a, p.trans_b, dtype_name(p.ab), dtype_name(p.ab), dtype_name(p.c), p.align_a, p.align_b,
      p.align_c,
      st != CUBLAS_STATUS_SUCCESS ? std::string("cublasLtMatmulAlgoGetHeuristic: ") + cublasLtGetStatusName(st)
                                  : std::string("no heuristic result"));
  return plan;
}

}  // namespace

void matmul(Context& ctx, Tensor& c, const Tensor& a, const Tensor& b, bool trans_a, bool trans_b, float alpha,
            float beta) {
  const MatmulShape s = kernel_check::matmul(ctx.device(), c, a, b, trans_a, trans_b, alpha, beta);
  const DType ab = s.dtype;
  const MatrixShape am = s.a, bm = s.b;
  const std::int64_t M = s.M, N = s.N, K = s.K;
  if (M == 0 || N == 0) return;
  const Launch l{ctx.stream(), ctx.max_blocks()};
  if (K == 0) {  // op(a) @ op(b) is all zeros; cuBLASLt wants non-empty matrices
    launch_matmul_fallback(l, ab, c.dtype(), c.data(), a.data(), b.data(), M, N, K, am.cols, bm.cols, trans_a, trans_b,
                           alpha, beta);
    return;
  }
  const Problem p{M,
                  N,
                  K,
                  am.rows,
                  am.cols,
                  bm.rows,
                  bm.cols,
                  trans_a,
                  trans_b,
                  ab,
                  c.dtype(),
                  alignment_of(a.data()),
                  alignment_of(b.data()),
                  alignment_of(c.data())};
  const Context::MatmulKey key{M,
                               N,
                               K,
                               am.cols,
                               bm.cols,
                               trans_a ? 1 : 0,
                               trans_b ? 1 : 0,
                               static_cast<std::int64_t>(ab),
                               static_cast<std::int64_t>(c.dtype()),
                               p.align_a,
                               p.align_b,
                               p.align_c,
                               ctx.allow_tf32() ? 1 : 0,
                               static_cast<std::int64_t>(ctx.workspace_bytes())};
  auto it = ctx.matmul_plans.find(key);
  if (it == ctx.matmul_plans.end()) {
    if (ctx.matmul_plans.size() >= kMaxPlans) ctx.matmul_plans.clear();
    it = ctx.matmul_plans.emplace(key, make_plan(ctx, p)).first;
  }
  const MatmulPlan& plan = *it->second;
  if (plan.fallback) {
    launch_matmul_fallback(l, ab, c.dtype(), c.data(), a.data(), b.data(), M, N, K, am.cols, bm.cols, trans_a, trans_b,
                           alpha, beta);
    return;
  }
  NEOX_CUBLAS_CHECK(cublasLtMatmul(ctx.cublaslt(), plan.desc, &alpha, b.data(), plan.a, a.data(), plan.b, &beta,
                                   c.data(), plan.c, c.data(), plan.c, &plan.algo, ctx.workspace(),
                                   ctx.workspace_bytes(), ctx.stream()));
}

}  // namespace neox::cuda
