// SPDX-License-Identifier: Apache-2.0
// Index checks, cross-entropy and embedding kernels.
// Row kernels use one block per row (grid-stride over rows).
#include "common.cuh"

namespace neox::cuda {
namespace {

__global__ void find_bad_ids_kernel(unsigned long long* first_bad, const std::int32_t* ids, std::int64_t n,
                                    std::int64_t hi, bool allow_negative) {
  for (std::int64_t i = global_thread(); i < n; i += grid_threads()) {
    const std::int64_t id = ids[i];
    if (id >= hi || (id < 0 && !allow_negative)) atomicMin(first_bad, static_cast<unsigned long long>(i));
  }
}

// losses[n] = lse[n] - logits[n, target] (0 for a negative target);
// max in f32, sum of exp in double (as the cpu backend), lse in double.
template <typename T>
__global__ void __launch_bounds__(kMaxRowThreads)
    cross_entropy_forward_kernel(float* losses, float* lse, const T* logits, const std::int32_t* targets,
                                 std::int64_t N, std::int64_t V) {
  for (std::int64_t row = blockIdx.x; row < N; row += gridDim.x) {
    const T* x = logits + row * V;
    float mx = -INFINITY;
    for (std::int64_t i = threadIdx.x; i < V; i += blockDim.x) mx = fmaxf(mx, to_float(x[i]));
    mx = block_max(mx);
    double s = 0.0;
    for (std::int64_t i = threadIdx.x; i < V; i += blockDim.x) s += static_cast<double>(expf(to_float(x[i]) - mx));
    s = block_sum(s);
    if (threadIdx.x == 0) {
      const double row_lse = static_cast<double>(mx) + log(s);
      lse[row] = static_cast<float>(row_lse);
      const std::int32_t t = targets[row];
      losses[row] = t < 0 ? 0.0f : static_cast<float>(row_lse - static_cast<double>(to_float(x[t])));
    }
  }
}

// dlogits[n, i] = (exp(logits[n, i] - lse[n]) - [i == target]) * dloss; 0 in
// ignored rows. Each element is read and written by one thread (in place is safe).
template <typename T>
__global__ void __launch_bounds__(kMaxRowThreads)
    cross_entropy_backward_kernel(T* dlogits, const T* logits, const float* lse, const std::int32_t* targets,
                                  float dloss, std::int64_t N, std::int64_t V) {
  for (std::int64_t row = blockIdx.x; row < N; row += gridDim.x) {
    const T* x = logits + row * V;
    T* d = dlogits + row * V;
    const std::int64_t target = targets[row];
    if (target < 0) {
      for (std::int64_t i = threadIdx.x; i < V; i += blockDim.x) d[i] = from_float<T>(0.0f);
      continue;
    }
    const float row_lse = lse[row];
    for (std::int64_t i = threadIdx.x; i < V; i += blockDim.x) {
      const float p = expf(to_float(x[i]) - row_lse);
      d[i] = from_float<T>((i == target ? p - 1.0f : p) * dloss);
    }
  }
}

// ---- 16-byte vector paths for bf16 and f16 rows (V % 8 == 0, aligned rows)

struct alignas(16) Pack8 {
  unsigned short u[8];
};

template <typename T>
__device__ __forceinline__ float bits_to_float(unsigned short u);
template <>
__device__ __forceinline__ float bits_to_float<__nv_bfloat16>(unsigned short u) {
  return __uint_as_float(static_cast<unsigned>(u) << 16);
}
template <>
__device__ __forceinline__ float bits_to_float<__half>(unsigned short u) {
  return __half2float(__ushort_as_half(u));
}
template <typename T>
__device__ __forceinline__ unsigned short float_to_bits(float x) {
  T t = from_float<T>(x);
  return *reinterpret_cast<unsigned short*>(&t);
}

// The forward in one pass over the row: each thread keeps a running max (f32)
// and its sum of exponentials relative to it (double), rescaled when the max
// grows; the block then rescales every thread's sum to the row's max. Same
// arithmetic as cross_entropy_forward_kernel up to the rescaling's rounding.
template <typename T>
__global__ void __launch_bounds__(kMaxRowThreads)
    cross_entropy_forward_vec_kernel(float* losses, float* lse, const T* logits, const std::int32_t* targets,
                                     std::int64_t N, std::int64_t V) {
  const int packs = static_cast<int>(V / 8);
  for (std::int64_t row = blockIdx.x; row < N; row += gridDim.x) {
    const Pack8* x = reinterpret_cast<const Pack8*>(logits + row * V);
    float mx = -INFINITY;
    double s = 0.0;
    for (int i = static_cast<int>(threadIdx.x); i < packs; i += static_cast<int>(blockDim.x)) {
      const Pack8 p = x[i];
      float f[8];
      float pm = -INFINITY;
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        f[e] = bits_to_float<T>(p.u[e]);
        pm = fmaxf(pm, f[e]);
      }
      if (pm > mx) {
        s *= exp(static_cast<double>(mx) - static_cast<double>(pm));  // 0 while mx is -inf
        mx = pm;
      }
#pragma unroll
      for (int e = 0; e < 8; ++e) s += static_cast<double>(expf(f[e] - mx));
    }
    const float row_max = block_max(mx);
    s = mx == -INFINITY ? 0.0 : s * exp(static_cast<double>(mx) - static_cast<double>(row_max));
    s = block_sum(s);
    if (threadIdx.x == 0) {
      const double row_lse = static_cast<double>(row_max) + log(s);
      lse[row] = static_cast<float>(row_lse);
      const std::int32_t t = targets[row];
      losses[row] = t < 0 ? 0.0f : static_cast<float>(row_lse - static_cast<double>(to_float(logits[row * V + t])));
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kMaxRowThreads)
    cross_entropy_backward_vec_kernel(T* dlogits, const T* logits, const float* lse, const std::int32_t* targets,
                                      float dloss, std::int64_t N, std::int64_t V) {
  const int packs = static_cast<int>(V / 8);
  for (std::int64_t row = blockIdx.x; row < N; row += gridDim.x) {
    const Pack8* x = reinterpret_cast<const Pack8*>(logits + row * V);
    Pack8* d = reinterpret_cast<Pack8*>(dlogits + row * V);
    const std::int64_t target = targets[row];
    const float row_lse = lse[row];
    for (int i = static_cast<int>(threadIdx.x); i < packs; i += static_cast<int>(blockDim.x)) {
      Pack8 out;
      if (target < 0) {
#pragma unroll
        for (int e = 0; e < 8; ++e) out.u[e] = float_to_bits<T>(0.0f);
      } else {
        const Pack8 p = x[i];
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          const float q = expf(bits_to_float<T>(p.u[e]) - row_lse);
          out.u[e] = float_to_bits<T>((static_cast<std::int64_t>(i) * 8 + e == target ? q - 1.0f : q) * dloss);
        }
      }
      d[i] = out;
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kMaxRowThreads)
    embedding_forward_kernel(T* out, const std::int32_t* ids, const T* table, std::int64_t N, std::int64_t C,
                             bool accumulate) {
  for (std::int64_t row = blockIdx.x; row < N; row += gridDim.x) {
    const T* src = table + static_cast<std::int64_t>(ids[row]) * C;
    T* dst = out + row * C;
    if (accumulate) {
      for (std::int64_t c = threadIdx.x; c < C; c += blockDim.x)
        dst[c] = from_float<T>(to_float(dst[c]) + to_float(src[c]));
    } else {
      for (std::int64_t c = threadIdx.x; c < C; c += blockDim.x) dst[c] = src[c];
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kMaxRowThreads)
    embedding_backward_kernel(float* dtable, const std::int32_t* ids, const T* dout, std::int64_t N, std::int64_t C) {
  for (std::int64_t row = blockIdx.x; row < N; row += gridDim.x) {
    float* dst = dtable + static_cast<std::int64_t>(ids[row]) * C;
    const T* src = dout + row * C;
    for (std::int64_t c = threadIdx.x; c < C; c += blockDim.x) atomicAdd(dst + c, to_float(src[c]));
  }
}

// Rows of 2-byte elements that the vector kernels can read 16 bytes at a
// time: V a multiple of 8 and the base 16-byte aligned (every row then is).
template <typename T>
bool vector_rows(const void* base, std::int64_t V) {
  return sizeof(T) == 2 && V % 8 == 0 && V / 8 <= (std::int64_t{1} << 30) &&
         reinterpret_cast<std::uintptr_t>(base) % 16 == 0;
}

}  // namespace

void launch_find_bad_ids(const Launch& l, unsigned long long* first_bad, const std::int32_t* ids, std::int64_t n,
                         std::int64_t hi, bool allow_negative) {
  if (n <= 0) return;
  find_bad_ids_kernel<<<grid_for(n, l.max_blocks), kThreads, 0, l.stream>>>(first_bad, ids, n, hi, allow_negative);
  NEOX_CUDA_CHECK_LAUNCH();
}

void launch_cross_entropy_forward(const Launch& l, DType dt, float* losses, float* lse, const void* logits,
                                  const std::int32_t* targets, std::int64_t N, std::int64_t V) {
  if (N <= 0) return;
  dispatch_float(dt, "cross_entropy_forward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (sizeof(T) == 2) {
      if (vector_rows<T>(logits, V)) {
        cross_entropy_forward_vec_kernel<T><<<grid_rows(N), row_threads(V / 8), 0, l.stream>>>(
            losses, lse, static_cast<const T*>(logits), targets, N, V);
        return;
      }
    }
    cross_entropy_forward_kernel<T>
        <<<grid_rows(N), row_threads(V), 0, l.stream>>>(losses, lse, static_cast<const T*>(logits), targets, N, V);
  });
  NEOX_CUDA_CHECK_LAUNCH();
}

void launch_cross_entropy_backward(const Launch& l, DType dt, void* dlogits, const void* logits, const float* lse,
                                   const std::int32_t* targets, float dloss, std::int64_t N, std::int64_t V) {
  if (N <= 0 || V <= 0) return;
  dispatch_float(dt, "cross_entropy_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (sizeof(T) == 2) {
      if (vector_rows<T>(logits, V) && vector_rows<T>(dlogits, V)) {
        cross_entropy_backward_vec_kernel<T><<<grid_rows(N), row_threads(V / 8), 0, l.stream>>>(
            static_cast<T*>(dlogits), static_cast<const T*>(logits), lse, targets, dloss, N, V);
        return;
      }
    }
    cross_entropy_backward_kernel<T><<<grid_rows(N), row_threads(V), 0, l.stream>>>(
        static_cast<T*>(dlogits), static_cast<const T*>(logits), lse, targets, dloss, N, V);
  });
  NEOX_CUDA_CHECK_LAUNCH();
}

void launch_embedding_forward(const Launch& l, DType dt, void* out, const std::int32_t* ids, const void* table,
                              std::int64_t N, std::int64_t C, bool accumulate) {
  if (N <= 0 || C <= 0) return;
  dispatch_float(dt, "embedding_forward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    embedding_forward_kernel<T><<<grid_rows(N), row_threads(C), 0, l.stream>>>(
        static_cast<T*>(out), ids, static_cast<const T*>(table), N, C, accumulate);
  });
  NEOX_CUDA_CHECK_LAUNCH();
}

void launch_embedding_backward(const Launch& l, DType dt, float* dtable, const std::int32_t* ids, const void* dout,
                               std::int64_t N, std::int64_t C) {
  if (N <= 0 || C <= 0) return;
  dispatch_float(dt, "embedding_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    embedding_backward_kernel<T>
        <<<grid_rows(N), row_threads(C), 0, l.stream>>>(dtable, ids, static_cast<const T*>(dout), N, C);
  });
  NEOX_CUDA_CHECK_LAUNCH();
}

}  // namespace neox::cuda
