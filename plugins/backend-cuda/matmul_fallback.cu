// SPDX-License-Identifier: Apache-2.0
// A plain shared-memory tiled matmul (16 x 16 tiles, f32 accumulation) for
// the cases cuBLASLt does not take: K = 0, or no algorithm from its heuristic.
// Row-major c[M,N] = alpha op(a) op(b) + beta c; beta = 0 does not read c.
#include "common.cuh"

namespace neox::cuda {
namespace {

constexpr int kTile = 16;

template <typename TIn, typename TOut>
__global__ void matmul_tiled_kernel(TOut* c, const TIn* a, const TIn* b, std::int64_t M, std::int64_t N, std::int64_t K,
                                    std::int64_t lda, std::int64_t ldb, bool trans_a, bool trans_b, float alpha,
                                    float beta) {
  __shared__ float as[kTile][kTile + 1];
  __shared__ float bs[kTile][kTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const std::int64_t m_tiles = (M + kTile - 1) / kTile;
  const std::int64_t col = static_cast<std::int64_t>(blockIdx.x) * kTile + tx;
  for (std::int64_t tile_m = blockIdx.y; tile_m < m_tiles; tile_m += gridDim.y) {
    const std::int64_t row = tile_m * kTile + ty;
    float acc = 0.0f;
    for (std::int64_t k0 = 0; k0 < K; k0 += kTile) {
      // as[ty][tx] = op(a)[row, k0 + tx]; bs[ty][tx] = op(b)[k0 + ty, col]
      const std::int64_t ak = k0 + tx;
      as[ty][tx] = (row < M && ak < K) ? to_float(trans_a ? a[ak * lda + row] : a[row * lda + ak]) : 0.0f;
      const std::int64_t bk = k0 + ty;
      bs[ty][tx] = (bk < K && col < N) ? to_float(trans_b ? b[col * ldb + bk] : b[bk * ldb + col]) : 0.0f;
      __syncthreads();
      for (int k = 0; k < kTile; ++k) acc += as[ty][k] * bs[k][tx];
      __syncthreads();
    }
    if (row < M && col < N) {
      const std::int64_t o = row * N + col;
      const float prev = beta == 0.0f ? 0.0f : beta * to_float(c[o]);
      c[o] = from_float<TOut>(alpha * acc + prev);
    }
  }
}

}  // namespace

void launch_matmul_fallback(const Launch& l, DType ab_dt, DType c_dt, void* c, const void* a, const void* b,
                            std::int64_t M, std::int64_t N, std::int64_t K, std::int64_t lda, std::int64_t ldb,
                            bool trans_a, bool trans_b, float alpha, float beta) {
  if (M <= 0 || N <= 0) return;
  const std::int64_t n_tiles = (N + kTile - 1) / kTile;
  const std::int64_t m_tiles = (M + kTile - 1) / kTile;
  if (n_tiles > 0x7fffffff)
    throw Error("cuda backend: matmul: N = " + std::to_string(N) + " is too large for the fallback kernel");
  const dim3 grid(static_cast<unsigned>(n_tiles), static_cast<unsigned>(std::min<std::int64_t>(m_tiles, 65535)));
  const dim3 block(kTile, kTile);
  dispatch_float(ab_dt, "matmul", [&](auto in_tag) {
    using TIn = typename decltype(in_tag)::type;
    if (c_dt == ab_dt) {
      matmul_tiled_kernel<TIn, TIn><<<grid, block, 0, l.stream>>>(static_cast<TIn*>(c), static_cast<const TIn*>(a),
                                                                  static_cast<const TIn*>(b), M, N, K, lda, ldb,
                                                                  trans_a, trans_b, alpha, beta);
    } else if (c_dt == DType::f32) {
      matmul_tiled_kernel<TIn, float><<<grid, block, 0, l.stream>>>(static_cast<float*>(c), static_cast<const TIn*>(a),
                                                                    static_cast<const TIn*>(b), M, N, K, lda, ldb,
                                                                    trans_a, trans_b, alpha, beta);
    } else {
      throw Error("cuda backend: matmul: c must have the dtype of a and b, or f32");
    }
  });
  NEOX_CUDA_CHECK_LAUNCH();
}

}  // namespace neox::cuda
