// SPDX-License-Identifier: Apache-2.0
// Bias add and its backward (column sums).
#include <algorithm>
#include <cstdint>

#include "neox/kernel_contract.h"
#include "ops.h"

namespace neox::cpu {
namespace {

// out[N,C] += bias[C]
void add_bias_f32(float* out, const float* bias, std::int64_t N, std::int64_t C) {
#pragma omp parallel for schedule(static) if (N * C > 16384)
  for (std::int64_t n = 0; n < N; ++n) {
    float* row = out + n * C;
    for (std::int64_t c = 0; c < C; ++c) row[c] += bias[c];
  }
}

// dbias[C] += sum over n of dout[N,C] (double accumulators, blocks of columns per thread)
void bias_backward_f32(float* dbias, const float* dout, std::int64_t N, std::int64_t C) {
  constexpr std::int64_t kBlock = 64;
  const std::int64_t blocks = (C + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (N * C > 16384)
  for (std::int64_t blk = 0; blk < blocks; ++blk) {
    const std::int64_t c0 = blk * kBlock, c1 = std::min(C, c0 + kBlock);
    double acc[kBlock] = {};
    for (std::int64_t n = 0; n < N; ++n) {
      const float* row = dout + n * C;
      for (std::int64_t c = c0; c < c1; ++c) acc[c - c0] += row[c];
    }
    for (std::int64_t c = c0; c < c1; ++c) dbias[c] = static_cast<float>(dbias[c] + acc[c - c0]);
  }
}

}  // namespace

void add_bias(Tensor& out, const Tensor& bias) {
  const RowsShape s = kernel_check::add_bias(Device{}, out, bias);
  add_bias_f32(out.ptr<float>(), bias.ptr<float>(), s.rows, s.cols);
}

void bias_backward(Tensor& dbias, const Tensor& dout) {
  const RowsShape s = kernel_check::bias_backward(Device{}, dbias, dout);
  bias_backward_f32(dbias.ptr<float>(), dout.ptr<float>(), s.rows, s.cols);
}

}  // namespace neox::cpu
