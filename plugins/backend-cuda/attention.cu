// SPDX-License-Identifier: Apache-2.0
// Causal softmax attention kernels (flash-attention 2 style on CUDA cores):
// scores are computed tile by tile with an online softmax and never stored.
//
// Work split. A group of G lanes (G a power of two, consecutive lanes of one
// warp) owns one row (a query, or in attention_dkdv_kernel a key): lane g of
// the group holds head dimensions d = g + i*G, i < kPerThread, of that row's
// vectors in registers. G is the smallest power of two with G*kPerThread >=
// hs (1, 2, 4, 8 for hs <= 32, 64, 128, 256). A dot product is the lane's
// partial sum reduced over its group with a __shfl_xor_sync butterfly, which
// leaves the same bits in every lane of the group. A block of kThreads
// threads holds R = kThreads/G rows; it walks the other side (keys, or
// queries) in tiles of kTile rows staged in shared memory as f32.
//
//  * attention_rows_kernel: out and lse for query rows; one kernel for
//    attention_forward (keys from qkv) and attention_decode (keys from the
//    cache), described by strides. A query at position p runs the same tiles
//    (multiples of kTile from key 0) with the same arithmetic whichever block
//    and call it belongs to, and a tile that is fully masked for it leaves
//    its state bit-identical, so decoding a sequence in chunks reproduces
//    attention_forward bit for bit (but for the sign of an exact zero).
//  * attention_backward: D_t = dout_t . out_t (attention_d_kernel), then
//    dq per query row (attention_dq_kernel, over key tiles) and dk, dv per
//    key row (attention_dkdv_kernel, over query tiles), each recomputing
//    p = exp(q.k*scale - lse). Every element of dqkv is written exactly once,
//    without atomics.
//
// Arithmetic is f32 whatever the storage dtype; results are rounded once.
//
// This file is plain C++ apart from the CUDA builtins (launches go through
// cudaLaunchKernel, not <<< >>>), so that it can also be compiled on a host
// against an emulation of those builtins to check indexing without a GPU.
#include "attention.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <type_traits>

#include "neox/error.h"

namespace neox::cuda {
namespace {

constexpr int kThreads = 128;                    // threads per block, every kernel here
constexpr int kTile = 32;                        // keys (or queries) per shared-memory tile
constexpr int kPerThread = 32;                   // head dimensions per lane: d = g + i*G, i < kPerThread
constexpr std::size_t kDefaultSmem = 48 * 1024;  // above this, opt in per kernel

static_assert(kThreads % 32 == 0, "whole warps");
static_assert(kMaxAttentionHeadSize <= 8 * kPerThread, "G = 8 must cover the largest head");

// ---------------------------------------------------------------- helpers

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <>
__device__ __forceinline__ __half from_float<__half>(float x) {
  return __float2half_rn(x);
}

__device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }

// Sum of x over the G consecutive lanes of a group (G a power of two <= 32).
// Every lane of the warp must call it. The butterfly adds the same two
// numbers in every lane at every step (a + b == b + a exactly), so all lanes
// of a group end with the same bits.
template <int G>
__device__ __forceinline__ float group_sum(float x) {
#pragma unroll
  for (int o = G / 2; o > 0; o /= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// ------------------------------------------------------- forward and decode

// Strides are in elements of the storage dtype. Query row t of batch b,
// head h: q + b*q_batch + h*hs + t*q_row; key (and value) position j:
// k + b*kv_batch + h*kv_head + j*kv_row; out row t: out + b*out_batch +
// h*hs + t*out_row.
struct RowsArgs {
  const void* q;
  const void* k;
  const void* v;
  void* out;
  float* lse;  // [B,H,rows], or nullptr
  std::int64_t q_batch, q_row;
  std::int64_t kv_batch, kv_head, kv_row;
  std::int64_t out_batch, out_row;
  std::int64_t key_offset;  // query row t attends to key positions [0, key_offset + t]
  int H, hs, rows;          // rows: query rows per (batch, head)
  float scale;
};

// grid (B*H, ceil(rows/R)); dynamic shared memory 2*kTile*hs floats.
template <typename T, int G>
__global__ void __launch_bounds__(kThreads) attention_rows_kernel(const RowsArgs a) {
  constexpr int R = kThreads / G;
  extern __shared__ float smem[];
  const int hs = a.hs;
  float* const ks = smem;               // [kTile][hs]
  float* const vs = smem + kTile * hs;  // [kTile][hs]

  const int bh = static_cast<int>(blockIdx.x);
  const int b = bh / a.H, h = bh - b * a.H;
  const int q0 = static_cast<int>(gridDim.y - 1 - blockIdx.y) * R;  // the longest rows first
  const int g = static_cast<int>(threadIdx.x) % G;
  const int row = q0 + static_cast<int>(threadIdx.x) / G;
  const bool active = row < a.rows;
  const std::int64_t limit = active ? a.key_offset + row : -1;        // last key this row sees
  const std::int64_t kmax = a.key_offset + imin(q0 + R, a.rows) - 1;  // last key the block needs
  const std::int64_t r = active ? row : 0;

  const T* q = static_cast<const T*>(a.q) + b * a.q_batch + static_cast<std::int64_t>(h) * hs + r * a.q_row;
  float qr[kPerThread], acc[kPerThread];
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    const int d = g + i * G;
    qr[i] = (active && d < hs) ? to_float(q[d]) : 0.0f;
    acc[i] = 0.0f;
  }
  float m = -INFINITY;  // running max of the row's scaled scores
  float l = 0.0f;       // running sum of exp(score - m)

  const T* kb = static_cast<const T*>(a.k) + b * a.kv_batch + h * a.kv_head;
  const T* vb = static_cast<const T*>(a.v) + b * a.kv_batch + h * a.kv_head;
  for (std::int64_t k0 = 0; k0 <= kmax; k0 += kTile) {
    __syncthreads();  // everyone is done with the previous tile
    for (int idx = static_cast<int>(threadIdx.x); idx < kTile * hs; idx += kThreads) {
      const int j = idx / hs, d = idx - j * hs;
      const std::int64_t key = k0 + j;
      const bool in = key <= kmax;  // beyond kmax: zeros, never read from memory
      ks[idx] = in ? to_float(kb[key * a.kv_row + d]) : 0.0f;
      vs[idx] = in ? to_float(vb[key * a.kv_row + d]) : 0.0f;
    }
    __syncthreads();

    float s[kTile];
    float tile_max = -INFINITY;
#pragma unroll
    for (int j = 0; j < kTile; ++j) {
      float dot = 0.0f;
#pragma unroll
      for (int i = 0; i < kPerThread; ++i) {
        const int d = g + i * G;
        if (d < hs) dot += qr[i] * ks[j * hs + d];
      }
      dot = group_sum<G>(dot);
      s[j] = (k0 + j <= limit) ? dot * a.scale : -INFINITY;
      tile_max = fmaxf(tile_max, s[j]);
    }
    const float m_new = fmaxf(m, tile_max);
    if (m_new != -INFINITY) {               // else every key so far is masked: nothing to add
      const float alpha = expf(m - m_new);  // 0 when m = -inf (then l and acc are 0)
      l *= alpha;
#pragma unroll
      for (int i = 0; i < kPerThread; ++i) acc[i] *= alpha;
#pragma unroll
      for (int j = 0; j < kTile; ++j) {
        const float p = expf(s[j] - m_new);  // 0 for masked keys
        l += p;
#pragma unroll
        for (int i = 0; i < kPerThread; ++i) {
          const int d = g + i * G;
          if (d < hs) acc[i] += p * vs[j * hs + d];
        }
      }
      m = m_new;
    }
  }

  if (active) {
    T* o = static_cast<T*>(a.out) + b * a.out_batch + static_cast<std::int64_t>(h) * hs + r * a.out_row;
    const float inv = 1.0f / l;  // l >= 1: the row's largest score contributes exp(0)
#pragma unroll
    for (int i = 0; i < kPerThread; ++i) {
      const int d = g + i * G;
      if (d < hs) o[d] = from_float<T>(acc[i] * inv);
    }
    if (a.lse != nullptr && g == 0) a.lse[static_cast<std::int64_t>(bh) * a.rows + row] = m + logf(l);
  }
}

// Writes the k and v of qkv[B,Tq,3C] into the caches [B,H,max_T,hs] at
// positions offset + t. One element per thread, grid-stride.
struct ScatterArgs {
  const void* qkv;
  void* k_cache;
  void* v_cache;
  std::int64_t n;  // B*Tq*H*hs
  std::int64_t max_T, offset;
  int Tq, H, hs;
};

template <typename T>
__global__ void __launch_bounds__(kThreads) attention_scatter_kernel(const ScatterArgs a) {
  const std::int64_t C = static_cast<std::int64_t>(a.H) * a.hs;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * kThreads;
  for (std::int64_t idx = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x; idx < a.n; idx += stride) {
    const std::int64_t d = idx % a.hs;
    std::int64_t rest = idx / a.hs;
    const std::int64_t h = rest % a.H;
    rest /= a.H;
    const std::int64_t t = rest % a.Tq;
    const std::int64_t b = rest / a.Tq;
    const std::int64_t src = (b * a.Tq + t) * 3 * C + C + h * a.hs + d;
    const std::int64_t dst = ((b * a.H + h) * a.max_T + a.offset + t) * a.hs + d;
    static_cast<T*>(a.k_cache)[dst] = static_cast<const T*>(a.qkv)[src];
    static_cast<T*>(a.v_cache)[dst] = static_cast<const T*>(a.qkv)[src + C];
  }
}

// ------------------------------------------------------------------ backward

// qkv, dqkv [B,T,3C]; dout, out [B,T,C]; lse, D [B,H,T] (n_rows = B*H*T).
struct BackwardArgs {
  void* dqkv;
  const void* dout;
  const void* qkv;
  const void* out;
  const float* lse;
  float* D;
  std::int64_t n_rows;
  int T, H, hs;
  float scale;
};

// D[b,h,t] = dout[b,t,h] . out[b,t,h], the row's sum_j p_j (dout . v_j).
// One warp per row (b*H + h)*T + t; grid ceil(n_rows / (kThreads/32)).
template <typename T>
__global__ void __launch_bounds__(kThreads) attention_d_kernel(const BackwardArgs a) {
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const std::int64_t rr = static_cast<std::int64_t>(blockIdx.x) * (kThreads / 32) + threadIdx.x / 32;
  if (rr >= a.n_rows) return;  // the whole warp: no shuffle or barrier follows for it
  const std::int64_t C = static_cast<std::int64_t>(a.H) * a.hs;
  const std::int64_t t = rr % a.T, bh = rr / a.T;
  const std::int64_t b = bh / a.H, h = bh % a.H;
  const std::int64_t off = (b * a.T + t) * C + h * a.hs;
  const T* go = static_cast<const T*>(a.dout) + off;
  const T* o = static_cast<const T*>(a.out) + off;
  float sum = 0.0f;
  for (int d = lane; d < a.hs; d += 32) sum += to_float(go[d]) * to_float(o[d]);
#pragma unroll
  for (int x = 16; x > 0; x /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, x);
  if (lane == 0) a.D[rr] = sum;
}

// dq for query rows: dq_t = scale * sum_{j<=t} p_tj (dout_t . v_j - D_t) k_j,
// p_tj = exp(q_t . k_j * scale - lse_t). grid (B*H, ceil(T/R)); dynamic
// shared memory 2*kTile*hs floats.
template <typename T, int G>
__global__ void __launch_bounds__(kThreads) attention_dq_kernel(const BackwardArgs a) {
  constexpr int R = kThreads / G;
  extern __shared__ float smem[];
  const int hs = a.hs;
  const std::int64_t C = static_cast<std::int64_t>(a.H) * hs, C3 = 3 * C;
  float* const ks = smem;               // [kTile][hs]
  float* const vs = smem + kTile * hs;  // [kTile][hs]

  const int bh = static_cast<int>(blockIdx.x);
  const int b = bh / a.H, h = bh - b * a.H;
  const int q0 = static_cast<int>(gridDim.y - 1 - blockIdx.y) * R;  // the longest rows first
  const int g = static_cast<int>(threadIdx.x) % G;
  const int row = q0 + static_cast<int>(threadIdx.x) / G;
  const bool active = row < a.T;
  const std::int64_t limit = active ? row : -1;
  const std::int64_t kmax = imin(q0 + R, a.T) - 1;
  const std::int64_t r = active ? row : 0;

  // q of row t at base + t*C3, k at + C, v at + 2C
  const T* base =
      static_cast<const T*>(a.qkv) + static_cast<std::int64_t>(b) * a.T * C3 + static_cast<std::int64_t>(h) * hs;
  const T* q = base + r * C3;
  const T* go =
      static_cast<const T*>(a.dout) + (static_cast<std::int64_t>(b) * a.T + r) * C + static_cast<std::int64_t>(h) * hs;
  const std::int64_t stat = static_cast<std::int64_t>(bh) * a.T + r;
  const float row_lse = active ? a.lse[stat] : 0.0f;
  const float row_D = active ? a.D[stat] : 0.0f;

  float qr[kPerThread], gr[kPerThread], dq[kPerThread];
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    const int d = g + i * G;
    const bool in = active && d < hs;
    qr[i] = in ? to_float(q[d]) : 0.0f;
    gr[i] = in ? to_float(go[d]) : 0.0f;
    dq[i] = 0.0f;
  }

  for (std::int64_t k0 = 0; k0 <= kmax; k0 += kTile) {
    __syncthreads();  // everyone is done with the previous tile
    for (int idx = static_cast<int>(threadIdx.x); idx < kTile * hs; idx += kThreads) {
      const int j = idx / hs, d = idx - j * hs;
      const std::int64_t key = k0 + j;
      const bool in = key <= kmax;
      ks[idx] = in ? to_float(base[key * C3 + C + d]) : 0.0f;
      vs[idx] = in ? to_float(base[key * C3 + 2 * C + d]) : 0.0f;
    }
    __syncthreads();

    for (int j = 0; j < kTile; ++j) {
      float s = 0.0f, dp = 0.0f;
#pragma unroll
      for (int i = 0; i < kPerThread; ++i) {
        const int d = g + i * G;
        if (d < hs) {
          s += qr[i] * ks[j * hs + d];
          dp += gr[i] * vs[j * hs + d];
        }
      }
      s = group_sum<G>(s);
      dp = group_sum<G>(dp);
      const float p = (k0 + j <= limit) ? expf(s * a.scale - row_lse) : 0.0f;
      const float ds = p * (dp - row_D);
#pragma unroll
      for (int i = 0; i < kPerThread; ++i) {
        const int d = g + i * G;
        if (d < hs) dq[i] += ds * ks[j * hs + d];
      }
    }
  }

  if (active) {
    T* o =
        static_cast<T*>(a.dqkv) + (static_cast<std::int64_t>(b) * a.T + row) * C3 + static_cast<std::int64_t>(h) * hs;
#pragma unroll
    for (int i = 0; i < kPerThread; ++i) {
      const int d = g + i * G;
      if (d < hs) o[d] = from_float<T>(dq[i] * a.scale);
    }
  }
}

// dk, dv for key rows: dv_j = sum_{t>=j} p_tj dout_t, dk_j = scale *
// sum_{t>=j} p_tj (dout_t . v_j - D_t) q_t. grid (B*H, ceil(T/R)); dynamic
// shared memory 2*kTile*hs + 2*kTile floats.
template <typename T, int G>
__global__ void __launch_bounds__(kThreads) attention_dkdv_kernel(const BackwardArgs a) {
  constexpr int R = kThreads / G;
  extern __shared__ float smem[];
  const int hs = a.hs;
  const std::int64_t C = static_cast<std::int64_t>(a.H) * hs, C3 = 3 * C;
  float* const qs = smem;                   // [kTile][hs] q of the tile's queries
  float* const gs = smem + kTile * hs;      // [kTile][hs] their dout
  float* const ls = smem + 2 * kTile * hs;  // [kTile] their lse
  float* const Ds = ls + kTile;             // [kTile] their D

  const int bh = static_cast<int>(blockIdx.x);
  const int b = bh / a.H, h = bh - b * a.H;
  const int j0 = static_cast<int>(blockIdx.y) * R;  // the longest rows (first keys) first
  const int g = static_cast<int>(threadIdx.x) % G;
  const int key = j0 + static_cast<int>(threadIdx.x) / G;
  const bool active = key < a.T;
  const std::int64_t kk = active ? key : 0;

  const T* base = static_cast<const T*>(a.qkv) + static_cast<std::int64_t>(b) * a.T * C3 +
                  static_cast<std::int64_t>(h) * hs;  // q of row t at base + t*C3, k at + C, v at + 2C
  const T* gbase = static_cast<const T*>(a.dout) + static_cast<std::int64_t>(b) * a.T * C +
                   static_cast<std::int64_t>(h) * hs;  // dout of row t at gbase + t*C
  const float* lse = a.lse + static_cast<std::int64_t>(bh) * a.T;
  const float* D = a.D + static_cast<std::int64_t>(bh) * a.T;

  float kr[kPerThread], vr[kPerThread], dk[kPerThread], dv[kPerThread];
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    const int d = g + i * G;
    const bool in = active && d < hs;
    kr[i] = in ? to_float(base[kk * C3 + C + d]) : 0.0f;
    vr[i] = in ? to_float(base[kk * C3 + 2 * C + d]) : 0.0f;
    dk[i] = 0.0f;
    dv[i] = 0.0f;
  }

  // queries t >= j0 (earlier ones see none of the block's keys)
  for (std::int64_t i0 = j0; i0 < a.T; i0 += kTile) {
    __syncthreads();  // everyone is done with the previous tile
    for (int idx = static_cast<int>(threadIdx.x); idx < kTile * hs; idx += kThreads) {
      const int i = idx / hs, d = idx - i * hs;
      const std::int64_t t = i0 + i;
      const bool in = t < a.T;
      qs[idx] = in ? to_float(base[t * C3 + d]) : 0.0f;
      gs[idx] = in ? to_float(gbase[t * C + d]) : 0.0f;
    }
    for (int idx = static_cast<int>(threadIdx.x); idx < kTile; idx += kThreads) {
      const std::int64_t t = i0 + idx;
      const bool in = t < a.T;
      ls[idx] = in ? lse[t] : 0.0f;
      Ds[idx] = in ? D[t] : 0.0f;
    }
    __syncthreads();

    for (int i = 0; i < kTile; ++i) {
      float s = 0.0f, dp = 0.0f;
#pragma unroll
      for (int e = 0; e < kPerThread; ++e) {
        const int d = g + e * G;
        if (d < hs) {
          s += kr[e] * qs[i * hs + d];
          dp += vr[e] * gs[i * hs + d];
        }
      }
      s = group_sum<G>(s);
      dp = group_sum<G>(dp);
      const std::int64_t t = i0 + i;
      const float p = (active && t >= key && t < a.T) ? expf(s * a.scale - ls[i]) : 0.0f;
      const float ds = p * (dp - Ds[i]);
#pragma unroll
      for (int e = 0; e < kPerThread; ++e) {
        const int d = g + e * G;
        if (d < hs) {
          dv[e] += p * gs[i * hs + d];
          dk[e] += ds * qs[i * hs + d];
        }
      }
    }
  }

  if (active) {
    T* o =
        static_cast<T*>(a.dqkv) + (static_cast<std::int64_t>(b) * a.T + key) * C3 + static_cast<std::int64_t>(h) * hs;
#pragma unroll
    for (int e = 0; e < kPerThread; ++e) {
      const int d = g + e * G;
      if (d < hs) {
        o[C + d] = from_float<T>(dk[e] * a.scale);
        o[2 * C + d] = from_float<T>(dv[e]);
      }
    }
  }
}

}  // namespace
}  // namespace neox::cuda

#include "attention_mma.cuh"

namespace neox::cuda {
namespace {

// ----------------------------------------------------------------- launching

[[noreturn]] void fail(const std::string& what, int line) {
  throw Error("cuda attention: " + what + " (" + __FILE__ + ":" + std::to_string(line) + ")");
}

// Throws naming the kernel when its launch (or the call `e` came from) failed.
void check_launch(cudaError_t e, const char* kernel, int line) {
  const cudaError_t last = cudaGetLastError();  // also clears the error a failed launch leaves
  if (e == cudaSuccess) e = last;
  if (e != cudaSuccess) fail(std::string("launching ") + kernel + " failed: " + cudaGetErrorString(e), line);
}

template <typename Args>
void launch(void (*kernel)(Args), const char* name, int line, dim3 grid, std::size_t smem, cudaStream_t stream,
            Args args) {
  if (smem > kDefaultSmem)
    check_launch(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
                 name, line);
  void* params[] = {&args};
  check_launch(cudaLaunchKernel(kernel, grid, dim3(kThreads), params, smem, stream), name, line);
}

int group_size(int hs) { return hs <= 32 ? 1 : hs <= 64 ? 2 : hs <= 128 ? 4 : 8; }

// Calls f(T{}, std::integral_constant<int, G>{}) for the storage type of
// dtype and the group size of hs.
template <typename F>
void dispatch(DType dtype, int hs, const char* op, F&& f) {
  auto by_group = [&](auto tag) {
    switch (group_size(hs)) {
      case 1:
        f(tag, std::integral_constant<int, 1>{});
        return;
      case 2:
        f(tag, std::integral_constant<int, 2>{});
        return;
      case 4:
        f(tag, std::integral_constant<int, 4>{});
        return;
      default:
        f(tag, std::integral_constant<int, 8>{});
        return;
    }
  };
  switch (dtype) {
    case DType::f32:
      by_group(float{});
      return;
    case DType::bf16:
      by_group(__nv_bfloat16{});
      return;
    case DType::f16:
      by_group(__half{});
      return;
    default:
      break;
  }
  fail(std::string(op) + ": dtype must be f32, bf16 or f16, got " + std::string(dtype_name(dtype)), __LINE__);
}

// Throws for sizes the kernels cannot take; returns false when there is no work.
bool check_sizes(const char* op, int B, int T, int H, int hs) {
  if (B < 0 || T < 0 || H < 0)
    fail(std::string(op) + ": negative size (B " + std::to_string(B) + ", T " + std::to_string(T) + ", H " +
             std::to_string(H) + ")",
         __LINE__);
  if (hs < 1 || hs > kMaxAttentionHeadSize)
    fail(std::string(op) + ": head size " + std::to_string(hs) + " is outside [1, " +
             std::to_string(kMaxAttentionHeadSize) + "]",
         __LINE__);
  if (B == 0 || T == 0 || H == 0) return false;
  if (static_cast<std::int64_t>(B) * H > INT_MAX)
    fail(std::string(op) + ": B * n_head = " + std::to_string(static_cast<std::int64_t>(B) * H) + " is too large",
         __LINE__);
  const std::int64_t rows_per_block = kThreads / group_size(hs);
  if ((T + rows_per_block - 1) / rows_per_block > 65535)
    fail(std::string(op) + ": " + std::to_string(T) + " rows are too many for head size " + std::to_string(hs) +
             " (at most " + std::to_string(65535 * rows_per_block) + ")",
         __LINE__);
  return true;
}

// grid of the row kernels: (B*H, ceil(rows / R))
dim3 row_grid(int B, int H, int rows, int R) {
  return dim3(static_cast<unsigned>(B * H), static_cast<unsigned>((rows + R - 1) / R));
}

// The tensor-core kernels (attention_mma.cuh): bf16 and f16 at their head
// sizes, 16-byte aligned tensors, and a grid that fits.
bool use_mma(DType dtype, int hs, int B, int H, std::initializer_list<const void*> ptrs) {
  if ((dtype != DType::bf16 && dtype != DType::f16) || !mma_attention::supported_head_size(hs)) return false;
  const char* why = nullptr;
  if (static_cast<std::int64_t>(B) * H > 65535) why = "batch * heads is above 65535";
  for (const void* p : ptrs)
    if (reinterpret_cast<std::uintptr_t>(p) % 16 != 0) why = "a tensor is not 16-byte aligned";
  if (!why) return true;
  note_attention_fallback(why);  // ten times slower: the log says so, once
  return false;
}

// Calls f(T{}, std::integral_constant<int, HS>{}) for bf16/f16 and a
// supported head size.
template <typename F>
void dispatch_mma(DType dtype, int hs, F&& f) {
  auto by_size = [&](auto tag) {
    switch (hs) {
      case 32:
        f(tag, std::integral_constant<int, 32>{});
        return;
      case 64:
        f(tag, std::integral_constant<int, 64>{});
        return;
      case 80:
        f(tag, std::integral_constant<int, 80>{});
        return;
      case 96:
        f(tag, std::integral_constant<int, 96>{});
        return;
      default:
        f(tag, std::integral_constant<int, 128>{});
        return;
    }
  };
  if (dtype == DType::bf16)
    by_size(__nv_bfloat16{});
  else
    by_size(__half{});
}

dim3 mma_grid(int B, int T, int H) {
  return dim3(static_cast<unsigned>((T + mma_attention::kRows - 1) / mma_attention::kRows),
              static_cast<unsigned>(B * H));
}

}  // namespace

bool attention_uses_tensor_cores(DType dtype, int hs) {
  return (dtype == DType::bf16 || dtype == DType::f16) && mma_attention::supported_head_size(hs);
}

void attention_forward(cudaStream_t stream, DType dtype, void* out, float* lse, const void* qkv, int B, int T, int H,
                       int hs, bool tensor_cores) {
  const char* op = "attention_forward";
  if (!check_sizes(op, B, T, H, hs)) return;
  if (tensor_cores && use_mma(dtype, hs, B, H, {out, qkv})) {
    mma_attention::ForwardArgs m{qkv, out, lse, T, H, 1.4426950408889634f / std::sqrt(static_cast<float>(hs))};
    dispatch_mma(dtype, hs, [&](auto tag, auto size) {
      using T_ = decltype(tag);
      constexpr int HS = decltype(size)::value;
      launch(mma_attention::forward_kernel<T_, HS>, "mma_attention::forward_kernel", __LINE__, mma_grid(B, T, H),
             mma_attention::forward_smem<HS>(), stream, m);
    });
    return;
  }
  const std::int64_t C = static_cast<std::int64_t>(H) * hs, C3 = 3 * C;
  const std::size_t es = dtype_size(dtype);
  RowsArgs a{};
  a.q = qkv;
  a.k = static_cast<const char*>(qkv) + C * es;
  a.v = static_cast<const char*>(qkv) + 2 * C * es;
  a.out = out;
  a.lse = lse;
  a.q_batch = T * C3;
  a.q_row = C3;
  a.kv_batch = T * C3;
  a.kv_head = hs;
  a.kv_row = C3;
  a.out_batch = T * C;
  a.out_row = C;
  a.key_offset = 0;
  a.H = H;
  a.hs = hs;
  a.rows = T;
  a.scale = 1.0f / std::sqrt(static_cast<float>(hs));
  dispatch(dtype, hs, op, [&](auto tag, auto group) {
    using T_ = decltype(tag);
    constexpr int G = decltype(group)::value;
    launch(attention_rows_kernel<T_, G>, "attention_rows_kernel", __LINE__, row_grid(B, H, T, kThreads / G),
           2 * kTile * static_cast<std::size_t>(hs) * sizeof(float), stream, a);
  });
}

void attention_backward(cudaStream_t stream, DType dtype, void* dqkv, const void* dout, const void* qkv,
                        const void* out, const float* lse, float* D, int B, int T, int H, int hs, bool tensor_cores) {
  const char* op = "attention_backward";
  if (!check_sizes(op, B, T, H, hs)) return;
  if (tensor_cores && use_mma(dtype, hs, B, H, {dqkv, dout, qkv, out})) {
    const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
    mma_attention::BackwardArgs m{qkv, out, dout, lse, D, dqkv, T, H, scale, scale * 1.4426950408889634f};
    dispatch_mma(dtype, hs, [&](auto tag, auto size) {
      using T_ = decltype(tag);
      constexpr int HS = decltype(size)::value;
      // dq first: it writes D, which dkdv reads.
      launch(mma_attention::dq_kernel<T_, HS>, "mma_attention::dq_kernel", __LINE__, mma_grid(B, T, H),
             mma_attention::dq_smem<HS>(), stream, m);
      launch(mma_attention::dkdv_kernel<T_, HS>, "mma_attention::dkdv_kernel", __LINE__, mma_grid(B, T, H),
             mma_attention::dkdv_smem<HS>(), stream, m);
    });
    return;
  }
  BackwardArgs a{};
  a.dqkv = dqkv;
  a.dout = dout;
  a.qkv = qkv;
  a.out = out;
  a.lse = lse;
  a.D = D;
  a.n_rows = static_cast<std::int64_t>(B) * H * T;
  a.T = T;
  a.H = H;
  a.hs = hs;
  a.scale = 1.0f / std::sqrt(static_cast<float>(hs));
  constexpr std::int64_t kWarps = kThreads / 32;
  const std::int64_t d_blocks = (a.n_rows + kWarps - 1) / kWarps;
  if (d_blocks > INT_MAX) fail(std::string(op) + ": B * n_head * T is too large", __LINE__);
  dispatch(dtype, hs, op, [&](auto tag, auto group) {
    using T_ = decltype(tag);
    constexpr int G = decltype(group)::value;
    const std::size_t tile = kTile * static_cast<std::size_t>(hs) * sizeof(float);
    launch(attention_d_kernel<T_>, "attention_d_kernel", __LINE__, dim3(static_cast<unsigned>(d_blocks)), 0, stream, a);
    launch(attention_dq_kernel<T_, G>, "attention_dq_kernel", __LINE__, row_grid(B, H, T, kThreads / G), 2 * tile,
           stream, a);
    launch(attention_dkdv_kernel<T_, G>, "attention_dkdv_kernel", __LINE__, row_grid(B, H, T, kThreads / G),
           2 * tile + 2 * kTile * sizeof(float), stream, a);
  });
}

void attention_decode(cudaStream_t stream, DType dtype, void* out, void* k_cache, void* v_cache, const void* qkv, int B,
                      int Tq, int H, int hs, std::int64_t max_T, std::int64_t position_offset) {
  const char* op = "attention_decode";
  if (position_offset < 0 || Tq < 0 || position_offset + Tq > max_T)
    fail(std::string(op) + ": positions [" + std::to_string(position_offset) + ", " +
             std::to_string(position_offset + Tq) + ") do not fit a cache of max_T = " + std::to_string(max_T),
         __LINE__);
  if (!check_sizes(op, B, Tq, H, hs)) return;
  const std::int64_t C = static_cast<std::int64_t>(H) * hs, C3 = 3 * C;

  ScatterArgs s{};
  s.qkv = qkv;
  s.k_cache = k_cache;
  s.v_cache = v_cache;
  s.n = static_cast<std::int64_t>(B) * Tq * C;
  s.max_T = max_T;
  s.offset = position_offset;
  s.Tq = Tq;
  s.H = H;
  s.hs = hs;
  const std::int64_t scatter_blocks = std::min<std::int64_t>((s.n + kThreads - 1) / kThreads, 1 << 20);

  RowsArgs a{};
  a.q = qkv;
  a.k = k_cache;
  a.v = v_cache;
  a.out = out;
  a.lse = nullptr;
  a.q_batch = Tq * C3;
  a.q_row = C3;
  a.kv_batch = H * max_T * hs;
  a.kv_head = max_T * hs;
  a.kv_row = hs;
  a.out_batch = Tq * C;
  a.out_row = C;
  a.key_offset = position_offset;
  a.H = H;
  a.hs = hs;
  a.rows = Tq;
  a.scale = 1.0f / std::sqrt(static_cast<float>(hs));
  dispatch(dtype, hs, op, [&](auto tag, auto group) {
    using T_ = decltype(tag);
    constexpr int G = decltype(group)::value;
    launch(attention_scatter_kernel<T_>, "attention_scatter_kernel", __LINE__,
           dim3(static_cast<unsigned>(scatter_blocks)), 0, stream, s);
    launch(attention_rows_kernel<T_, G>, "attention_rows_kernel", __LINE__, row_grid(B, H, Tq, kThreads / G),
           2 * kTile * static_cast<std::size_t>(hs) * sizeof(float), stream, a);
  });
}

}  // namespace neox::cuda
