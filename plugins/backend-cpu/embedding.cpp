// SPDX-License-Identifier: Apache-2.0
// Embedding lookup (rows of a table by i32 id) and its backward.
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "neox/kernel_contract.h"
#include "ops.h"

namespace neox::cpu {
namespace {

// out[N,C] = (or +=) table[ids[N], C]
void embedding_forward_f32(float* out, const std::int32_t* ids, const float* table, std::int64_t N, std::int64_t C,
                           bool accumulate) {
#pragma omp parallel for schedule(static) if (N * C > 16384)
  for (std::int64_t n = 0; n < N; ++n) {
    const float* src = table + static_cast<std::int64_t>(ids[n]) * C;
    float* dst = out + n * C;
    if (accumulate)
      for (std::int64_t c = 0; c < C; ++c) dst[c] += src[c];
    else
      std::memcpy(dst, src, static_cast<std::size_t>(C) * sizeof(float));
  }
}

// dtable[V,C] += dout[N,C] scattered by ids[N]. Threads own blocks of
// columns, so rows named twice never race and the result is deterministic.
void embedding_backward_f32(float* dtable, const std::int32_t* ids, const float* dout, std::int64_t N, std::int64_t C) {
  constexpr std::int64_t kBlock = 32;
  const std::int64_t blocks = (C + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (N * C > 16384)
  for (std::int64_t blk = 0; blk < blocks; ++blk) {
    const std::int64_t c0 = blk * kBlock, c1 = std::min(C, c0 + kBlock);
    for (std::int64_t n = 0; n < N; ++n) {
      float* dst = dtable + static_cast<std::int64_t>(ids[n]) * C;
      const float* src = dout + n * C;
      for (std::int64_t c = c0; c < c1; ++c) dst[c] += src[c];
    }
  }
}

// Every id must name a row of the table.
void check_ids(const char* op, const Tensor& ids, std::int64_t V) {
  const std::int32_t* p = ids.ptr<std::int32_t>();
  for (std::int64_t n = 0; n < ids.numel(); ++n)
    if (p[n] < 0 || p[n] >= V) KernelChecker(op, Device{}).id_out_of_range(ids, n, p[n], V);
}

}  // namespace

void embedding_forward(Tensor& out, const Tensor& ids, const Tensor& table, bool accumulate) {
  const RowsShape s = kernel_check::embedding_forward(Device{}, out, ids, table, accumulate);
  check_ids("embedding_forward", ids, s.table_rows);
  embedding_forward_f32(out.ptr<float>(), ids.ptr<std::int32_t>(), table.ptr<float>(), s.rows, s.cols, accumulate);
}

void embedding_backward(Tensor& dtable, const Tensor& ids, const Tensor& dout) {
  const RowsShape s = kernel_check::embedding_backward(Device{}, dtable, ids, dout);
  check_ids("embedding_backward", ids, s.table_rows);
  embedding_backward_f32(dtable.ptr<float>(), ids.ptr<std::int32_t>(), dout.ptr<float>(), s.rows, s.cols);
}

}  // namespace neox::cpu
