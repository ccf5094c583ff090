// SPDX-License-Identifier: Apache-2.0
// Kernel launchers (defined in the .cu files). They take raw device
// pointers whose arguments the op wrappers have checked, queue the kernel on
// `stream`, and check the launch. `dt` is the activation dtype (f32, bf16 or
// f16) of the tensors documented as T; `max_blocks` caps grid-stride grids.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "neox/dtype.h"

namespace neox::cuda {

struct Launch {
  cudaStream_t stream = nullptr;
  int max_blocks = 1;
};

// elementwise.cu
// out[n] = a[n] + b[n] (T); out may alias a or b.
void launch_add(const Launch& l, DType dt, void* out, const void* a, const void* b, std::int64_t n);
// y = alpha x + beta y (T); beta == 0 does not read y.
void launch_axpby(const Launch& l, DType dt, void* y, const void* x, float alpha, float beta, std::int64_t n);
// Stores the bit pattern `bits` (of an element of `elem_bytes` = 2, 4 or 8 bytes) n times.
void launch_fill_bits(const Launch& l, void* t, std::uint64_t bits, int elem_bytes, std::int64_t n);
// out (out_dt) = in (in_dt), round to nearest even; dtypes differ, f32/bf16/f16.
void launch_convert(const Launch& l, DType out_dt, void* out, DType in_dt, const void* in, std::int64_t n);
// Exact GeLU and its backward (T); out may alias inp, dinp may alias dout.
void launch_gelu_forward(const Launch& l, DType dt, void* out, const void* inp, std::int64_t n);
void launch_gelu_backward(const Launch& l, DType dt, void* dinp, const void* inp, const void* dout, std::int64_t n);
// out[N,C] += bias[C] (T).
void launch_add_bias(const Launch& l, DType dt, void* out, const void* bias, std::int64_t N, std::int64_t C);
// One AdamW step over n f32 elements; the step's constants computed by the caller in double.
struct AdamWConstants {
  double lr_decay = 1.0;  // 1 - lr * weight_decay
  double beta1 = 0.9, beta2 = 0.999;
  double step_size = 0.0;  // lr / (1 - beta1^step)
  double bc2_sqrt = 1.0;   // sqrt(1 - beta2^step)
  double eps = 1e-8;
  double grad_scale = 1.0;
};
void launch_adamw(const Launch& l, float* param, const float* grad, float* m, float* v, const AdamWConstants& k,
                  std::int64_t n);

// norm.cu
// LayerNorm over rows of inp[N,C] (T); mean, rstd f32.
void launch_layernorm_forward(const Launch& l, DType dt, void* out, float* mean, float* rstd, const void* inp,
                              const void* weight, const void* bias, std::int64_t N, std::int64_t C, float eps);
// dinp[N,C] (T) += the input gradient.
void launch_layernorm_backward_input(const Launch& l, DType dt, void* dinp, const void* dout, const void* inp,
                                     const void* weight, const float* mean, const float* rstd, std::int64_t N,
                                     std::int64_t C);
// Column sums of dout[N,C] (T), and with inp/mean/rstd given of dout * xhat,
// into partial sums [chunks, C] (f32): rows split into `chunks` chunks of
// rows_per_chunk. partial_dw may be null (then inp, mean, rstd are unused).
void launch_column_partials(const Launch& l, DType dt, float* partial_db, float* partial_dw, const void* dout,
                            const void* inp, const float* mean, const float* rstd, std::int64_t N, std::int64_t C,
                            std::int64_t chunks, std::int64_t rows_per_chunk);
// dst[C] += sum over chunks of partials[chunks, C] (summed in double).
void launch_column_finalize(const Launch& l, float* dst, const float* partials, std::int64_t chunks, std::int64_t C);

// loss.cu
// *first_bad = min index i with ids[i] >= hi or (ids[i] < 0 and !allow_negative);
// *first_bad must hold ~0ull before.
void launch_find_bad_ids(const Launch& l, unsigned long long* first_bad, const std::int32_t* ids, std::int64_t n,
                         std::int64_t hi, bool allow_negative);
// losses[N], lse[N] (f32) from logits[N,V] (T) and targets (all < V).
void launch_cross_entropy_forward(const Launch& l, DType dt, float* losses, float* lse, const void* logits,
                                  const std::int32_t* targets, std::int64_t N, std::int64_t V);
// dlogits[N,V] (T, may alias logits).
void launch_cross_entropy_backward(const Launch& l, DType dt, void* dlogits, const void* logits, const float* lse,
                                   const std::int32_t* targets, float dloss, std::int64_t N, std::int64_t V);
// out[N,C] (T) = or += table[ids[n]] (T); ids all in range.
void launch_embedding_forward(const Launch& l, DType dt, void* out, const std::int32_t* ids, const void* table,
                              std::int64_t N, std::int64_t C, bool accumulate);
// dtable[V,C] (f32) += dout[N,C] (T) by ids (atomicAdd).
void launch_embedding_backward(const Launch& l, DType dt, float* dtable, const std::int32_t* ids, const void* dout,
                               std::int64_t N, std::int64_t C);

// reduce.cu
// partials[blocks] (double) of sum(x) or sum(x^2) over n elements (T);
// returns the number of blocks used (<= max_partials).
int launch_sum_partials(const Launch& l, DType dt, double* partials, int max_partials, const void* x, std::int64_t n,
                        bool squares);

// rotary.cu
// Rotates q and k of qkv[B,T,3C] (T) in place; cos_sin[T, half, 2] (double)
// for positions position_offset + t; sign +1 forward, -1 backward.
void launch_rotary(const Launch& l, DType dt, void* qkv, const double* cos_sin, std::int64_t B, std::int64_t T,
                   std::int64_t C, std::int64_t n_head, int rotary_dims, double sign);

// matmul_fallback.cu
// c[M,N] (c_dt: ab_dt or f32) = alpha op(a) op(b) + beta c, plain tiled kernel
// (used when cuBLASLt has no algorithm, and for K = 0).
void launch_matmul_fallback(const Launch& l, DType ab_dt, DType c_dt, void* c, const void* a, const void* b,
                            std::int64_t M, std::int64_t N, std::int64_t K, std::int64_t lda, std::int64_t ldb,
                            bool trans_a, bool trans_b, float alpha, float beta);

}  // namespace neox::cuda
