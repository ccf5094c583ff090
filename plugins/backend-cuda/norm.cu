// SPDX-License-Identifier: Apache-2.0
// LayerNorm forward/backward and the column sums of bias and LayerNorm
// parameter gradients.
//
// Row kernels: statistics in f32, two passes (mean, then the biased variance
// of x - mean). Rows of up to kRegMaxPacks packs are held in registers (read
// once): one warp per row up to 32 * 8 packs (warp shuffles only), else one
// block of up to 256 threads per row (block reductions); a pack is 16 bytes
// when the pointers are 16-byte aligned and C a multiple of 16 / sizeof(T),
// else one element. Longer rows: one block per row, re-reading the row.
// Column sums: blocks of 32 packs of columns x 8 row lanes over a chunk of
// rows write per-chunk partial sums; a second kernel adds the chunks (in
// double, in a fixed order) into the f32 gradient. Both are deterministic.
#include <initializer_list>
#include <type_traits>

#include "common.cuh"

namespace neox::cuda {
namespace {

constexpr int kColTile = 32;  // packs of columns per block (one warp wide: coalesced rows)
constexpr int kRowLanes = 8;  // rows read in parallel per block

// Register-resident row kernels: blockDim.x threads per row (32: blockDim.y
// rows per block, one per warp; more: one row per block), each holding up to
// K packs of the row.
constexpr int kRegThreads = 256;                   // most threads of a block
constexpr int kRegK = 8;                           // most packs per thread
constexpr int kRegMaxPacks = kRegThreads * kRegK;  // longest row held in registers, in packs
constexpr int kWarpRows = 4;                       // rows (warps) per block, warp-per-row kernels

template <bool kWarp>
__device__ __forceinline__ float row_sum(float v) {
  if constexpr (kWarp)
    return warp_sum(v);
  else
    return block_sum(v);
}

// The rows of a grid-stride loop: a warp per row (kWarp: blockDim.y warps
// per block) or a block per row.
template <bool kWarp>
__device__ __forceinline__ std::int64_t first_row() {
  return kWarp ? static_cast<std::int64_t>(blockIdx.x) * blockDim.y + threadIdx.y
               : static_cast<std::int64_t>(blockIdx.x);
}
template <bool kWarp>
__device__ __forceinline__ std::int64_t row_stride() {
  return kWarp ? static_cast<std::int64_t>(gridDim.x) * blockDim.y : static_cast<std::int64_t>(gridDim.x);
}

template <typename T, int V, int K, bool kWarp>
__global__ void __launch_bounds__(kRegThreads)
    layernorm_forward_reg_kernel(T* out, float* mean, float* rstd, const T* inp, const T* weight, const T* bias,
                                 std::int64_t N, std::int64_t C, float eps) {
  using P = Pack<T, V>;
  const int packs = static_cast<int>(C / V);
  const int tpr = static_cast<int>(blockDim.x);
  const int tx = static_cast<int>(threadIdx.x);
  for (std::int64_t row = first_row<kWarp>(); row < N; row += row_stride<kWarp>()) {
    const T* x = inp + row * C;
    P xv[K];
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const int j = tx + k * tpr;
      if (j < packs) xv[k] = load_pack<T, V>(x + static_cast<std::int64_t>(j) * V);
    }
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < K; ++k) {
      if (tx + k * tpr < packs) {
#pragma unroll
        for (int e = 0; e < V; ++e) s += to_float(xv[k].v[e]);
      }
    }
    const float m = row_sum<kWarp>(s) / static_cast<float>(C);
    float q = 0.0f;
#pragma unroll
    for (int k = 0; k < K; ++k) {
      if (tx + k * tpr < packs) {
#pragma unroll
        for (int e = 0; e < V; ++e) {
          const float d = to_float(xv[k].v[e]) - m;
          q += d * d;
        }
      }
    }
    const float var = row_sum<kWarp>(q) / static_cast<float>(C);
    const float r = 1.0f / sqrtf(var + eps);
    T* o = out + row * C;
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const int j = tx + k * tpr;
      if (j < packs) {
        const std::int64_t c = static_cast<std::int64_t>(j) * V;
        const P w = load_pack<T, V>(weight + c), b = load_pack<T, V>(bias + c);
        P y;
#pragma unroll
        for (int e = 0; e < V; ++e)
          y.v[e] = from_float<T>((to_float(xv[k].v[e]) - m) * r * to_float(w.v[e]) + to_float(b.v[e]));
        store_pack<T, V>(o + c, y);
      }
    }
    if (tx == 0) {
      mean[row] = m;
      rstd[row] = r;
    }
  }
}

// dinp += r * (dnorm - mean(dnorm) - xhat * mean(dnorm * xhat)), dnorm = dout * weight;
// the row's dout and inp held in registers. Every pack of dinp is read and
// written by the thread that read the same pack of inp, after the row sums.
template <typename T, int V, int K, bool kWarp>
__global__ void __launch_bounds__(kRegThreads)
    layernorm_backward_input_reg_kernel(T* dinp, const T* dout, const T* inp, const T* weight, const float* mean,
                                        const float* rstd, std::int64_t N, std::int64_t C) {
  using P = Pack<T, V>;
  const int packs = static_cast<int>(C / V);
  const int tpr = static_cast<int>(blockDim.x);
  const int tx = static_cast<int>(threadIdx.x);
  for (std::int64_t row = first_row<kWarp>(); row < N; row += row_stride<kWarp>()) {
    const T* x = inp + row * C;
    const T* g = dout + row * C;
    const float m = mean[row], r = rstd[row];
    P xv[K], gv[K];
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const int j = tx + k * tpr;
      if (j < packs) {
        xv[k] = load_pack<T, V>(x + static_cast<std::int64_t>(j) * V);
        gv[k] = load_pack<T, V>(g + static_cast<std::int64_t>(j) * V);
      }
    }
    float s1 = 0.0f, s2 = 0.0f;
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const int j = tx + k * tpr;
      if (j < packs) {
        const P w = load_pack<T, V>(weight + static_cast<std::int64_t>(j) * V);
#pragma unroll
        for (int e = 0; e < V; ++e) {
          const float dnorm = to_float(gv[k].v[e]) * to_float(w.v[e]);
          s1 += dnorm;
          s2 += dnorm * ((to_float(xv[k].v[e]) - m) * r);
        }
      }
    }
    const float mean_dnorm = row_sum<kWarp>(s1) / static_cast<float>(C);
    const float mean_dnorm_xhat = row_sum<kWarp>(s2) / static_cast<float>(C);
    T* d = dinp + row * C;
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const int j = tx + k * tpr;
      if (j < packs) {
        const std::int64_t c = static_cast<std::int64_t>(j) * V;
        const P w = load_pack<T, V>(weight + c);
        P dv = load_pack<T, V>(d + c);
#pragma unroll
        for (int e = 0; e < V; ++e) {
          const float dnorm = to_float(gv[k].v[e]) * to_float(w.v[e]);
          const float xhat = (to_float(xv[k].v[e]) - m) * r;
          dv.v[e] = from_float<T>(to_float(dv.v[e]) + r * (dnorm - mean_dnorm - xhat * mean_dnorm_xhat));
        }
        store_pack<T, V>(d + c, dv);
      }
    }
  }
}

// Rows longer than kRegMaxPacks packs: one block per row (grid-stride over
// rows), block reductions, the row re-read for each pass.
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

// The same for the input gradient.
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

// grid (ceil(C / V / 32), chunks), block (32, 8): thread (x, y) sums pack
// blockIdx.x * 32 + x of the columns over rows r0 + y, r0 + y + 8, ... of its
// chunk; then the 8 row lanes are added in order (the same f32 additions for
// every V). partial_db[chunk, c] = sum of dout[r, c] over the chunk's rows;
// with kXhat also partial_dw[chunk, c] = sum of dout[r, c] * (inp[r, c] -
// mean[r]) * rstd[r].
template <typename T, int V, bool kXhat>
__global__ void __launch_bounds__(kColTile* kRowLanes)
    column_partials_kernel(float* partial_db, float* partial_dw, const T* dout, const T* inp, const float* mean,
                           const float* rstd, std::int64_t N, std::int64_t C, std::int64_t rows_per_chunk) {
  using P = Pack<T, V>;
  constexpr int kTileCols = kColTile * V;
  constexpr int kUnroll = 4;  // rows in flight per thread
  __shared__ float sdb[kRowLanes][kTileCols];
  __shared__ float sdw[kXhat ? kRowLanes : 1][kXhat ? kTileCols : 1];
  const std::int64_t col0 = static_cast<std::int64_t>(blockIdx.x) * kTileCols;
  const std::int64_t c = col0 + static_cast<std::int64_t>(threadIdx.x) * V;  // the pack's first column
  const std::int64_t r0 = static_cast<std::int64_t>(blockIdx.y) * rows_per_chunk;
  const std::int64_t r1 = r0 + rows_per_chunk < N ? r0 + rows_per_chunk : N;
  float db[V], dw[V];
#pragma unroll
  for (int e = 0; e < V; ++e) db[e] = dw[e] = 0.0f;
  if (c < C) {  // C % V == 0: the whole pack lies in the row
    std::int64_t r = r0 + threadIdx.y;
    for (; r + (kUnroll - 1) * kRowLanes < r1; r += kUnroll * kRowLanes) {
      P gv[kUnroll], xv[kUnroll];
      float mr[kUnroll], sr[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const std::int64_t ru = r + u * kRowLanes;
        gv[u] = load_pack<T, V>(dout + ru * C + c);
        if constexpr (kXhat) {
          xv[u] = load_pack<T, V>(inp + ru * C + c);
          mr[u] = mean[ru];
          sr[u] = rstd[ru];
        }
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
        for (int e = 0; e < V; ++e) {
          const float g = to_float(gv[u].v[e]);
          db[e] += g;
          if constexpr (kXhat) dw[e] += g * ((to_float(xv[u].v[e]) - mr[u]) * sr[u]);
        }
      }
    }
    for (; r < r1; r += kRowLanes) {
      const P gv = load_pack<T, V>(dout + r * C + c);
      P xv;
      float mr = 0.0f, sr = 0.0f;
      if constexpr (kXhat) {
        xv = load_pack<T, V>(inp + r * C + c);
        mr = mean[r];
        sr = rstd[r];
      }
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const float g = to_float(gv.v[e]);
        db[e] += g;
        if constexpr (kXhat) dw[e] += g * ((to_float(xv.v[e]) - mr) * sr);
      }
    }
  }
#pragma unroll
  for (int e = 0; e < V; ++e) {
    sdb[threadIdx.y][threadIdx.x * V + e] = db[e];
    if constexpr (kXhat) sdw[threadIdx.y][threadIdx.x * V + e] = dw[e];
  }
  __syncthreads();
  const std::int64_t out_row = static_cast<std::int64_t>(blockIdx.y) * C;
  for (int t = static_cast<int>(threadIdx.y * kColTile + threadIdx.x); t < kTileCols && col0 + t < C;
       t += kColTile * kRowLanes) {
    float tb = 0.0f, tw = 0.0f;
#pragma unroll
    for (int k = 0; k < kRowLanes; ++k) {
      tb += sdb[k][t];
      if constexpr (kXhat) tw += sdw[k][t];
    }
    partial_db[out_row + col0 + t] = tb;
    if constexpr (kXhat) partial_dw[out_row + col0 + t] = tw;
  }
}

// dst[c] += sum over chunks of partials[chunk, c], in double. Block (32
// columns, 32 chunk lanes): lane y adds chunks y, y + 32, ... in order, then
// the 32 lane sums are added in lane order: a fixed order, whatever the
// scheduling. Grid-stride over tiles of 32 columns.
constexpr int kFinCols = 32, kFinLanes = 32;

__global__ void __launch_bounds__(kFinCols* kFinLanes)
    column_finalize_kernel(float* dst, const float* partials, std::int64_t chunks, std::int64_t C) {
  __shared__ double lane_sum[kFinLanes][kFinCols + 1];
  for (std::int64_t c0 = static_cast<std::int64_t>(blockIdx.x) * kFinCols; c0 < C;
       c0 += static_cast<std::int64_t>(gridDim.x) * kFinCols) {
    const std::int64_t c = c0 + threadIdx.x;
    double s = 0.0;
    if (c < C) {
#pragma unroll 4
      for (std::int64_t k = threadIdx.y; k < chunks; k += kFinLanes) s += partials[k * C + c];
    }
    lane_sum[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
      double t = 0.0;
      for (int k = 0; k < kFinLanes; ++k) t += lane_sum[k][threadIdx.x];
      dst[c] = static_cast<float>(dst[c] + t);
    }
    __syncthreads();  // lane_sum is read before the next tile overwrites it
  }
}

// How a row of `packs` packs is held in registers: `threads` threads per row
// (32: one warp per row), up to `k` packs each; k == 0: too long.
struct RegPlan {
  int threads = 0, k = 0;
};

RegPlan reg_plan(std::int64_t packs) {
  if (packs <= 32) return {32, 1};
  if (packs <= 64) return {32, 2};
  if (packs <= 128) return {32, 4};
  if (packs <= 32 * kRegK) return {32, kRegK};
  if (packs <= kRegMaxPacks) {
    const std::int64_t per_thread = (packs + kRegK - 1) / kRegK;  // threads needed
    return {static_cast<int>((per_thread + 31) / 32 * 32), kRegK};
  }
  return {};
}

// Calls f(integral_constant<int, V>) with V = 16 / sizeof(T) when every
// pointer is 16-byte aligned and C a multiple of V, else with V = 1.
template <typename T, typename F>
void with_pack(std::initializer_list<const void*> ptrs, std::int64_t C, F&& f) {
  bool vec = C % kPackOf<T> == 0;
  for (const void* p : ptrs) vec = vec && aligned16(p);
  if (vec)
    f(std::integral_constant<int, kPackOf<T>>{});
  else
    f(std::integral_constant<int, 1>{});
}

// Calls go(K, kWarp, grid, block) for the plan: one warp per row (blocks of
// 32 x kWarpRows), or one block of plan.threads per row.
template <typename Go>
void launch_reg(const RegPlan& plan, std::int64_t N, Go&& go) {
  if (plan.threads == 32) {
    const unsigned grid =
        static_cast<unsigned>(std::min<std::int64_t>((N + kWarpRows - 1) / kWarpRows, std::int64_t{1} << 20));
    const dim3 block(32, kWarpRows);
    switch (plan.k) {
      case 1:
        go(std::integral_constant<int, 1>{}, std::true_type{}, grid, block);
        break;
      case 2:
        go(std::integral_constant<int, 2>{}, std::true_type{}, grid, block);
        break;
      case 4:
        go(std::integral_constant<int, 4>{}, std::true_type{}, grid, block);
        break;
      default:
        go(std::integral_constant<int, kRegK>{}, std::true_type{}, grid, block);
        break;
    }
  } else {
    go(std::integral_constant<int, kRegK>{}, std::false_type{}, grid_rows(N),
       dim3(static_cast<unsigned>(plan.threads), 1));
  }
}

}  // namespace

void launch_layernorm_forward(const Launch& l, DType dt, void* out, float* mean, float* rstd, const void* inp,
                              const void* weight, const void* bias, std::int64_t N, std::int64_t C, float eps) {
  if (N <= 0 || C <= 0) return;
  dispatch_float(dt, "layernorm_forward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* o = static_cast<T*>(out);
    const T* x = static_cast<const T*>(inp);
    const T* w = static_cast<const T*>(weight);
    const T* b = static_cast<const T*>(bias);
    with_pack<T>({out, inp, weight, bias}, C, [&](auto v) {
      constexpr int V = decltype(v)::value;
      const RegPlan plan = reg_plan(C / V);
      if (plan.k == 0) {
        layernorm_forward_kernel<T><<<grid_rows(N), row_threads(C), 0, l.stream>>>(o, mean, rstd, x, w, b, N, C, eps);
        return;
      }
      launch_reg(plan, N, [&](auto k, auto warp, unsigned grid, dim3 block) {
        layernorm_forward_reg_kernel<T, V, decltype(k)::value, decltype(warp)::value>
            <<<grid, block, 0, l.stream>>>(o, mean, rstd, x, w, b, N, C, eps);
      });
    });
  });
  NEOX_CUDA_CHECK_LAUNCH();
}

void launch_layernorm_backward_input(const Launch& l, DType dt, void* dinp, const void* dout, const void* inp,
                                     const void* weight, const float* mean, const float* rstd, std::int64_t N,
                                     std::int64_t C) {
  if (N <= 0 || C <= 0) return;
  dispatch_float(dt, "layernorm_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* d = static_cast<T*>(dinp);
    const T* g = static_cast<const T*>(dout);
    const T* x = static_cast<const T*>(inp);
    const T* w = static_cast<const T*>(weight);
    with_pack<T>({dinp, dout, inp, weight}, C, [&](auto v) {
      constexpr int V = decltype(v)::value;
      const RegPlan plan = reg_plan(C / V);
      if (plan.k == 0) {
        layernorm_backward_input_kernel<T><<<grid_rows(N), row_threads(C), 0, l.stream>>>(d, g, x, w, mean, rstd, N, C);
        return;
      }
      launch_reg(plan, N, [&](auto k, auto warp, unsigned grid, dim3 block) {
        layernorm_backward_input_reg_kernel<T, V, decltype(k)::value, decltype(warp)::value>
            <<<grid, block, 0, l.stream>>>(d, g, x, w, mean, rstd, N, C);
      });
    });
  });
  NEOX_CUDA_CHECK_LAUNCH();
}

void launch_column_partials(const Launch& l, DType dt, float* partial_db, float* partial_dw, const void* dout,
                            const void* inp, const float* mean, const float* rstd, std::int64_t N, std::int64_t C,
                            std::int64_t chunks, std::int64_t rows_per_chunk) {
  if (N <= 0 || C <= 0) return;
  if (chunks < 1 || chunks > 65535 || chunks * rows_per_chunk < N)
    throw Error("cuda backend: column sums: bad chunking (" + std::to_string(chunks) + " chunks of " +
                std::to_string(rows_per_chunk) + " rows for " + std::to_string(N) + " rows)");
  const dim3 block(kColTile, kRowLanes);
  dispatch_float(dt, "column sums", [&](auto tag) {
    using T = typename decltype(tag)::type;
    with_pack<T>({dout, partial_dw ? inp : nullptr}, C, [&](auto v) {
      constexpr int V = decltype(v)::value;
      const std::int64_t tile = std::int64_t{kColTile} * V;
      const dim3 grid(static_cast<unsigned>((C + tile - 1) / tile), static_cast<unsigned>(chunks));
      if (partial_dw)
        column_partials_kernel<T, V, true>
            <<<grid, block, 0, l.stream>>>(partial_db, partial_dw, static_cast<const T*>(dout),
                                           static_cast<const T*>(inp), mean, rstd, N, C, rows_per_chunk);
      else
        column_partials_kernel<T, V, false><<<grid, block, 0, l.stream>>>(
            partial_db, nullptr, static_cast<const T*>(dout), nullptr, nullptr, nullptr, N, C, rows_per_chunk);
    });
  });
  NEOX_CUDA_CHECK_LAUNCH();
}

void launch_column_finalize(const Launch& l, float* dst, const float* partials, std::int64_t chunks, std::int64_t C) {
  if (C <= 0) return;
  const std::int64_t tiles = (C + kFinCols - 1) / kFinCols;
  const unsigned grid = static_cast<unsigned>(std::min<std::int64_t>(tiles, 1 << 20));
  column_finalize_kernel<<<grid, dim3(kFinCols, kFinLanes), 0, l.stream>>>(dst, partials, chunks, C);
  NEOX_CUDA_CHECK_LAUNCH();
}

}  // namespace neox::cuda
