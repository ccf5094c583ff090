// SPDX-License-Identifier: Apache-2.0
// Device helpers shared by the kernels: loads and stores of the three
// activation dtypes through float, block reductions, grid sizes, dtype dispatch.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "cuda_check.h"
#include "launch.h"
#include "neox/dtype.h"
#include "neox/error.h"

namespace neox::cuda {

// ---- conversions ---------------------------------------------------------
// Bit-exact with neox::bf16_to_float / float_to_bf16 / f16_to_float /
// float_to_f16 (core/src/runtime/dtype.cpp), NaNs included: round to nearest even.

__device__ __forceinline__ float to_float(float x) { return x; }

__device__ __forceinline__ float to_float(__nv_bfloat16 x) {
  return __uint_as_float(static_cast<unsigned>(__bfloat16_as_ushort(x)) << 16);
}

__device__ __forceinline__ float to_float(__half x) {
  const unsigned h = __half_as_ushort(x);
  if ((h & 0x7c00u) == 0x7c00u && (h & 0x3ffu))  // NaN: keep sign and payload as the host does
    return __uint_as_float(((h & 0x8000u) << 16) | 0x7f800000u | ((h & 0x3ffu) << 13));
  return __half2float(x);  // exact for every other value, subnormals included
}

template <typename T>
__device__ __forceinline__ T from_float(float f);

template <>
__device__ __forceinline__ float from_float<float>(float f) {
  return f;
}

template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float f) {
  const unsigned bits = __float_as_uint(f);
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu))  // NaN stays NaN
    return __ushort_as_bfloat16(static_cast<unsigned short>((bits >> 16) | 0x0040u));
  const unsigned rounding = 0x7fffu + ((bits >> 16) & 1u);
  return __ushort_as_bfloat16(static_cast<unsigned short>((bits + rounding) >> 16));
}

template <>
__device__ __forceinline__ __half from_float<__half>(float f) {
  const unsigned bits = __float_as_uint(f);
  const unsigned sign = (bits >> 16) & 0x8000u;
  const unsigned abs = bits & 0x7fffffffu;
  unsigned short out;
  if (abs >= 0x7f800000u) {  // inf or NaN
    out = static_cast<unsigned short>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u));
  } else if (abs >= 0x477ff000u) {  // overflow -> inf
    out = static_cast<unsigned short>(sign | 0x7c00u);
  } else if (abs < 0x38800000u) {  // subnormal or zero in f16
    if (abs < 0x33000000u) {
      out = static_cast<unsigned short>(sign);
    } else {
      const unsigned mant = (abs & 0x7fffffu) | 0x800000u;
      const int shift = 126 - static_cast<int>(abs >> 23);  // 14..24
      unsigned half = mant >> shift;
      const unsigned rem = mant & ((1u << shift) - 1u);
      const unsigned mid = 1u << (shift - 1);
      if (rem > mid || (rem == mid && (half & 1u))) ++half;
      out = static_cast<unsigned short>(sign | half);
    }
  } else {
    unsigned half = (abs - 0x38000000u) >> 13;
    const unsigned rem = abs & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (half & 1u))) ++half;
    out = static_cast<unsigned short>(sign | half);
  }
  return __ushort_as_half(out);
}

// ---- packed (vector) access --------------------------------------------------
// V consecutive elements moved as one load/store (16 bytes when V = 16 /
// sizeof(T)). The pointer must be aligned to sizeof(Pack): callers take the
// packed path only for 16-byte aligned pointers and row lengths that are a
// multiple of kPackOf<T>, and fall back to V = 1 (plain scalar accesses).

template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

template <typename T>
inline constexpr int kPackOf = static_cast<int>(16 / sizeof(T));

template <typename T, int V>
__device__ __forceinline__ Pack<T, V> load_pack(const T* p) {
  return *reinterpret_cast<const Pack<T, V>*>(p);
}
template <typename T, int V>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, V>& x) {
  *reinterpret_cast<Pack<T, V>*>(p) = x;
}

inline bool aligned16(const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0; }

// ---- reductions ------------------------------------------------------------
// blockDim.x must be a multiple of 32 (all lanes of every warp take part)
// and at most 1024; every thread of the block must call, and all get the
// result. Safe to call repeatedly (a barrier guards the shared scratch).

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

template <typename T>
__device__ T block_sum(T v) {
  __shared__ T partial[32];
  __shared__ T total;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = static_cast<int>(blockDim.x >> 5);
  v = warp_sum(v);
  __syncthreads();  // earlier readers of partial/total are done
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    T w = lane < warps ? partial[lane] : T(0);
    w = warp_sum(w);
    if (lane == 0) total = w;
  }
  __syncthreads();
  return total;
}

__device__ inline float block_max(float v) {
  __shared__ float partial[32];
  __shared__ float total;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = static_cast<int>(blockDim.x >> 5);
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float w = lane < warps ? partial[lane] : -INFINITY;
    w = warp_max(w);
    if (lane == 0) total = w;
  }
  __syncthreads();
  return total;
}

// ---- launch helpers (host) --------------------------------------------------

constexpr int kThreads = 256;

// Blocks of kThreads for a grid-stride loop over n items.
inline unsigned grid_for(std::int64_t n, int max_blocks, int threads = kThreads) {
  const std::int64_t want = (n + threads - 1) / threads;
  return static_cast<unsigned>(std::max<std::int64_t>(1, std::min<std::int64_t>(want, max_blocks)));
}

// Blocks for one-block-per-row kernels that loop over rows with a grid stride.
inline unsigned grid_rows(std::int64_t rows) {
  return static_cast<unsigned>(std::max<std::int64_t>(1, std::min<std::int64_t>(rows, 1 << 20)));
}

// Threads for a block that works along a row of C elements: a multiple of 32,
// at most kMaxRowThreads (row kernels declare it in __launch_bounds__).
constexpr int kMaxRowThreads = 1024;
inline int row_threads(std::int64_t C) {
  if (C >= 8192) return kMaxRowThreads;
  if (C >= 2048) return 512;
  if (C >= 256) return 256;
  return static_cast<int>(std::max<std::int64_t>(32, (C + 31) / 32 * 32));
}

template <typename T>
struct Tag {
  using type = T;
};

// Calls f(Tag<float>{}), f(Tag<__nv_bfloat16>{}) or f(Tag<__half>{}) for dt.
template <typename F>
void dispatch_float(DType dt, const char* what, F&& f) {
  switch (dt) {
    case DType::f32:
      f(Tag<float>{});
      return;
    case DType::bf16:
      f(Tag<__nv_bfloat16>{});
      return;
    case DType::f16:
      f(Tag<__half>{});
      return;
    default:
      break;
  }
  throw Error(std::string("cuda backend: ") + what + ": unsupported dtype " + std::string(dtype_name(dt)) +
              " (expected f32, bf16 or f16)");
}

// Grid-stride index helpers.
__device__ __forceinline__ std::int64_t global_thread() {
  return static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ std::int64_t grid_threads() { return static_cast<std::int64_t>(gridDim.x) * blockDim.x; }

}  // namespace neox::cuda
