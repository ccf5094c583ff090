// SPDX-License-Identifier: Apache-2.0
// sum and sum_squares: each block accumulates its grid-stride share in double
// and writes one partial; the host adds the partials in double. NaN and
// infinity propagate into the result.
#include "common.cuh"

namespace neox::cuda {
namespace {

template <typename T, bool kSquares>
__global__ void sum_partials_kernel(double* partials, const T* x, std::int64_t n) {
  double acc = 0.0;
  for (std::int64_t i = global_thread(); i < n; i += grid_threads()) {
    const double v = static_cast<double>(to_float(x[i]));
    acc += kSquares ? v * v : v;
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

}  // namespace

int launch_sum_partials(const Launch& l, DType dt, double* partials, int max_partials, const void* x, std::int64_t n,
                        bool squares) {
  if (n <= 0) return 0;
  const unsigned grid = grid_for(n, std::min(l.max_blocks, max_partials));
  dispatch_float(dt, squares ? "sum_squares" : "sum", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (squares)
      sum_partials_kernel<T, true><<<grid, kThreads, 0, l.stream>>>(partials, static_cast<const T*>(x), n);
    else
      sum_partials_kernel<T, false><<<grid, kThreads, 0, l.stream>>>(partials, static_cast<const T*>(x), n);
  });
  NEOX_CUDA_CHECK_LAUNCH();
  return static_cast<int>(grid);
}

}  // namespace neox::cuda
