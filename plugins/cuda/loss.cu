// SPDX-License-Identifier: Apache-2.0
// Index checks, cross-entropy and embedding kernels.
// Row kernels use one block per row (grid-stride over rows).
#include "common.cuh"

namespace neox::cuda {
namespace {

__global__ void find_bad_ids_kernel(unsigned long long* first_bad, const std::int32_t* ids,
                                    std::int64_t n, std::int64_t hi, bool allow_negative) {
  for (std::int64_t i = global_thread(); i < n; i += grid_threads()) {
    const std::int64_t id = ids[i];
    if (id >= hi || (id < 0 && !allow_negative))
      atomicMin(first_bad, static_cast<unsigned long long>(i));
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
    for (std::int64_t i = threadIdx.x; i < V; i += blockDim.x)
      s += static_cast<double>(expf(to_float(x[i]) - mx));
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
    embedding_backward_kernel(float* dtable, const std::int32_t* ids, const T* dout, std::int64_t N,
        std::int64_t C) {
  for (std::int64_t row = blockIdx.x; row < N; row += gridDim.x) {
    float* dst = dtable + static_cast<std::int64_t>(ids[row]) * C;
    const T* src = dout + row * C;
    for (std::int64_t c = threadIdx.x; c < C; c += blockDim.x) atomicAdd(dst + c, to_float(src[c]));
  }
}

}  // namespace

void launch_find_bad_ids(const Launch& l, unsigned long long* first_bad, const std::int32_t* ids,
                         std::int64_t n, std::int64_t hi, bool allow_negative) {
  if (n <= 0) return;
  find_bad_ids_kernel<<<grid_for(n, l.max_blocks), kThreads, 0, l.stream>>>(first_bad, ids, n, hi,
                                                                           allow_negative);
  NEOX_CUDA_CHECK_LAUNCH();
}

void launch_cross_entropy_forward(const Launch& l, DType dt, float* losses, float* lse,
                                  const void* logits, const std::int32_t* targets, std::int64_t N,
                                  std::int64_t V) {
  if (N <= 0) return;
  dispatch_float(dt, "cross_entropy_forward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    cross_entropy_forward_kernel<T><<<grid_rows(N), row_threads(V), 0, l.stream>>>(
        losses, lse, static_cast<const T*>(logits), targets, N, V);
  });
  NEOX_CUDA_CHECK_LAUNCH();
}

void launch_cross_entropy_backward(const Launch& l, DType dt, void* dlogits, const void* logits,
                                   const float* lse, const std::int32_t* targets, float dloss,
                                   std::int64_t N, std::int64_t V) {
  if (N <= 0 || V <= 0) return;
  dispatch_float(dt, "cross_entropy_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    cross_entropy_backward_kernel<T><<<grid_rows(N), row_threads(V), 0, l.stream>>>(
        static_cast<T*>(dlogits), static_cast<const T*>(logits), lse, targets, dloss, N, V);
  });
  NEOX_CUDA_CHECK_LAUNCH();
}

void launch_embedding_forward(const Launch& l, DType dt, void* out, const std::int32_t* ids,
                              const void* table, std::int64_t N, std::int64_t C, bool accumulate) {
  if (N <= 0 || C <= 0) return;
  dispatch_float(dt, "embedding_forward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    embedding_forward_kernel<T><<<grid_rows(N), row_threads(C), 0, l.stream>>>(
        static_cast<T*>(out), ids, static_cast<const T*>(table), N, C, accumulate);
  });
  NEOX_CUDA_CHECK_LAUNCH();
}

void launch_embedding_backward(const Launch& l, DType dt, float* dtable, const std::int32_t* ids,
                               const void* dout, std::int64_t N, std::int64_t C) {
  if (N <= 0 || C <= 0) return;
  dispatch_float(dt, "embedding_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    embedding_backward_kernel<T><<<grid_rows(N), row_threads(C), 0, l.stream>>>(
        dtable, ids, static_cast<const T*>(dout), N, C);
  });
  NEOX_CUDA_CHECK_LAUNCH();
}

}  // namespace neox::cuda
