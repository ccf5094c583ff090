// SPDX-License-Identifier: Apache-2.0
// Causal softmax attention on the GPU (flash-attention style: the T x T
// score matrix is never stored). The contracts are those of
// attention_forward, attention_backward and attention_decode in
// neox/kernels.h; these entry points take raw device pointers and trust the
// caller to have checked shapes, dtypes and devices.
//
// dtype is the activation dtype: DType::f32 (float), DType::bf16
// (__nv_bfloat16) or DType::f16 (__half); all arithmetic is f32, results are
// rounded once when stored. lse is always f32. Work is queued on `stream`;
// a failed launch throws neox::Error naming the kernel and file:line.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "neox/dtype.h"

namespace neox::cuda {

// The largest head size these kernels take (the caller refuses larger ones;
// the functions below throw neox::Error for them too).
constexpr int kMaxAttentionHeadSize = 256;

// True when attention_forward and attention_backward run on the tensor
// cores (attention_mma.cuh) for this dtype and head size (given 16-byte
// aligned tensors): bf16 and f16 at head sizes 32, 64, 80, 96 and 128. There
// the probabilities P and dS are rounded to the dtype for their products, and
// attention_decode (CUDA cores) matches attention_forward to rounding, not
// bit for bit.
bool attention_uses_tensor_cores(DType dtype, int hs);

// Called when a call that could run on the tensor cores cannot (`why`: an
// unaligned tensor, a grid too large): logs a warning the first time
// (attention_ops.cpp; the attention check program defines its own).
void note_attention_fallback(const char* why);

// qkv[B,T,3C] row-major, C = H*hs: q of head h at columns [h*hs, (h+1)*hs),
// k at C + h*hs, v at 2C + h*hs. Writes out[B,T,C] (head h at columns h*hs..)
// and lse[B,H,T] (f32), the log-sum-exp of row t's scaled scores (scale
// 1/sqrt(hs)), causal (key j <= query t).
// tensor_cores = false keeps bf16/f16 on the CUDA-core kernels (for A/B
// comparisons and as a fallback).
void attention_forward(cudaStream_t stream, DType dtype, void* out, float* lse, const void* qkv, int B, int T, int H,
                       int hs, bool tensor_cores = true);

// Writes (does not accumulate) every element of dqkv[B,T,3C] from
// dout[B,T,C] and the forward's qkv, out and lse. D is caller-allocated
// scratch of B*H*T floats. Deterministic (no atomics).
void attention_backward(cudaStream_t stream, DType dtype, void* dqkv, const void* dout, const void* qkv,
                        const void* out, const float* lse, float* D, int B, int T, int H, int hs,
                        bool tensor_cores = true);

// k_cache, v_cache [B,H,max_T,hs]; qkv[B,Tq,3C] holds Tq new tokens at
// positions [position_offset, position_offset + Tq). Writes their k and v
// into the caches at those positions, then out[B,Tq,C]: query i attends to
// cache positions [0, position_offset + i]. Shares attention_forward's
// CUDA-core kernel, so a sequence run in chunks gives that kernel's out bit
// for bit (but for the sign of an exact zero).
void attention_decode(cudaStream_t stream, DType dtype, void* out, void* k_cache, void* v_cache, const void* qkv, int B,
                      int Tq, int H, int hs, std::int64_t max_T, std::int64_t position_offset);

}  // namespace neox::cuda
