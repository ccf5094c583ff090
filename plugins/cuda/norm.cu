// SPDX-License-Identifier: Apache-2.0
// LayerNorm forward/backward and the column sums of bias and LayerNorm
// parameter gradients.
//
// Row kernels: one block per row (grid-stride over rows), statistics by block
// reduction in f32, two passes (mean, then the biased variance of x - mean).
// Column sums: blocks of 32 columns x 8 row lanes over a chunk of rows write
// per-chunk partial sums; a second kernel adds the chunks (in double) into
// the f32 gradient. Both are deterministic.
#include "common.cuh"

namespace neox::cuda {
namespace {

constexpr int kColTile = 32;  // columns per block (one warp wide: coalesced rows)
constexpr int kRowLanes = 8;  // rows read in parallel per block

template <typename T>
__global__ void __launch_bounds__(kMaxRowThreads)
    layernorm_forward_kernel(T* out, float* mean, float* rstd, const T* inp, const T* weight, const T* bias,
        std::int64_t N, std::int64_t C, float eps) {
  for (std::int64_t row = blockIdx.x; row < N; row += gridDim.x) {
    const T* x = inp + row * C;
    float s = 0.0f;
    for (std::int64_t c = threadIdx.x; c < C; c += blockDim.x) s += to_float(x[c]);
    const float m = block_sum(s) / static_cast<float>(C);
    float q = 0.0f;
    for (std::int64_t c = threadIdx.x; c < C; c += blockDim.x) {
      const float d = to_float(x[c]) - m;
      q += d * d;
    }
    const float var = block_sum(q) / static_cast<float>(C);
    const float r = 1.0f / sqrtf(var + eps);
    T* o = out + row * C;
    for (std::int64_t c = threadIdx.x; c < C; c += blockDim.x)
      o[c] = from_float<T>((to_float(x[c]) - m) * r * to_float(weight[c]) + to_float(bias[c]));
    if (threadIdx.x == 0) {
      mean[row] = m;
      rstd[row] = r;
    }
  }
}

// dinp += r * (dnorm - mean(dnorm) - xhat * mean(dnorm * xhat)), dnorm = dout * weight
template <typename T>
__global__ void __launch_bounds__(kMaxRowThreads)
    layernorm_backward_input_kernel(T* dinp, const T* dout, const T* inp, const T* weight, const float* mean,
        const float* rstd, std::int64_t N, std::int64_t C) {
  for (std::int64_t row = blockIdx.x; row < N; row += gridDim.x) {
    const T* x = inp + row * C;
    const T* g = dout + row * C;
    const float m = mean[row], r = rstd[row];
    float s1 = 0.0f, s2 = 0.0f;
    for (std::int64_t c = threadIdx.x; c < C; c += blockDim.x) {
      const float dnorm = to_float(g[c]) * to_float(weight[c]);
      s1 += dnorm;
      s2 += dnorm * ((to_float(x[c]) - m) * r);
    }
    const float mean_dnorm = block_sum(s1) / static_cast<float>(C);
    const float mean_dnorm_xhat = block_sum(s2) / static_cast<float>(C);
    T* d = dinp + row * C;
    for (std::int64_t c = threadIdx.x; c < C; c += blockDim.x) {
      const float dnorm = to_float(g[c]) * to_float(weight[c]);
      const float xhat = (to_float(x[c]) - m) * r;
      d[c] = from_float<T>(to_float(d[c]) + r * (dnorm - mean_dnorm - xhat * mean_dnorm_xhat));
    }
  }
}

// grid (ceil(C / 32), chunks), block (32, 8). partial_db[chunk, c] = sum of
// dout[r, c] over the chunk's rows; with kXhat also partial_dw[chunk, c] =
// sum of dout[r, c] * (inp[r, c] - mean[r]) * rstd[r].
template <typename T, bool kXhat>
__global__ void column_partials_kernel(float* partial_db, float* partial_dw, const T* dout,
                                       const T* inp, const float* mean, const float* rstd,
                                       std::int64_t N, std::int64_t C,
                                       std::int64_t rows_per_chunk) {
  __shared__ float sdb[kRowLanes][kColTile + 1];
  __shared__ float sdw[kRowLanes][kColTile + 1];
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * kColTile + threadIdx.x;
  const std::int64_t r0 = static_cast<std::int64_t>(blockIdx.y) * rows_per_chunk;
  const std::int64_t r1 = r0 + rows_per_chunk < N ? r0 + rows_per_chunk : N;
  float db = 0.0f, dw = 0.0f;
  if (c < C) {
    for (std::int64_t r = r0 + threadIdx.y; r < r1; r += kRowLanes) {
      const float g = to_float(dout[r * C + c]);
      db += g;
      if constexpr (kXhat) dw += g * ((to_float(inp[r * C + c]) - mean[r]) * rstd[r]);
    }
  }
  sdb[threadIdx.y][threadIdx.x] = db;
  sdw[threadIdx.y][threadIdx.x] = dw;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    float tb = 0.0f, tw = 0.0f;
    for (int k = 0; k < kRowLanes; ++k) {
      tb += sdb[k][threadIdx.x];
      tw += sdw[k][threadIdx.x];
    }
    const std::int64_t out = static_cast<std::int64_t>(blockIdx.y) * C + c;
    partial_db[out] = tb;
    if constexpr (kXhat) partial_dw[out] = tw;
  }
}

__global__ void column_finalize_kernel(float* dst, const float* partials, std::int64_t chunks,
                                       std::int64_t C) {
  for (std::int64_t c = global_thread(); c < C; c += grid_threads()) {
    double s = 0.0;
    for (std::int64_t k = 0; k < chunks; ++k) s += partials[k * C + c];
    dst[c] = static_cast<float>(dst[c] + s);
  }
}

}  // namespace

void launch_layernorm_forward(const Launch& l, DType dt, void* out, float* mean, float* rstd,
                              const void* inp, const void* weight, const void* bias, std::int64_t N,
                              std::int64_t C, float eps) {
  if (N <= 0 || C <= 0) return;
  dispatch_float(dt, "layernorm_forward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    layernorm_forward_kernel<T><<<grid_rows(N), row_threads(C), 0, l.stream>>>(
        static_cast<T*>(out), mean, rstd, static_cast<const T*>(inp), static_cast<const T*>(weight),
        static_cast<const T*>(bias), N, C, eps);
  });
  NEOX_CUDA_CHECK_LAUNCH();
}

void launch_layernorm_backward_input(const Launch& l, DType dt, void* dinp, const void* dout,
                                     const void* inp, const void* weight, const float* mean,
                                     const float* rstd, std::int64_t N, std::int64_t C) {
  if (N <= 0 || C <= 0) return;
  dispatch_float(dt, "layernorm_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    layernorm_backward_input_kernel<T><<<grid_rows(N), row_threads(C), 0, l.stream>>>(
        static_cast<T*>(dinp), static_cast<const T*>(dout), static_cast<const T*>(inp),
        static_cast<const T*>(weight), mean, rstd, N, C);
  });
  NEOX_CUDA_CHECK_LAUNCH();
}

void launch_column_partials(const Launch& l, DType dt, float* partial_db, float* partial_dw,
                            const void* dout, const void* inp, const float* mean, const float* rstd,
                            std::int64_t N, std::int64_t C, std::int64_t chunks,
                            std::int64_t rows_per_chunk) {
  if (N <= 0 || C <= 0) return;
  if (chunks < 1 || chunks > 65535 || chunks * rows_per_chunk < N)
    throw Error("cuda backend: column sums: bad chunking (" + std::to_string(chunks) + " chunks of " +
                std::to_string(rows_per_chunk) + " rows for " + std::to_string(N) + " rows)");
  const dim3 grid(static_cast<unsigned>((C + kColTile - 1) / kColTile), static_cast<unsigned>(chunks));
  const dim3 block(kColTile, kRowLanes);
  dispatch_float(dt, "column sums", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (partial_dw)
      column_partials_kernel<T, true><<<grid, block, 0, l.stream>>>(
          partial_db, partial_dw, static_cast<const T*>(dout), static_cast<const T*>(inp), mean, rstd,
          N, C, rows_per_chunk);
    else
      column_partials_kernel<T, false><<<grid, block, 0, l.stream>>>(
          partial_db, nullptr, static_cast<const T*>(dout), nullptr, nullptr, nullptr, N, C,
          rows_per_chunk);
  });
  NEOX_CUDA_CHECK_LAUNCH();
}

void launch_column_finalize(const Launch& l, float* dst, const float* partials, std::int64_t chunks,
                            std::int64_t C) {
  if (C <= 0) return;
  column_finalize_kernel<<<grid_for(C, l.max_blocks), kThreads, 0, l.stream>>>(dst, partials, chunks,
                                                                              C);
  NEOX_CUDA_CHECK_LAUNCH();
}

}  // namespace neox::cuda
