// SPDX-License-Identifier: Apache-2.0
// Softmax cross-entropy over the last dimension; negative targets are ignored.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "neox/kernel_contract.h"
#include "ops.h"

namespace neox::cpu {
namespace {

// losses[N], lse[N] from logits[N,V], targets[N]; exp sums in double
void cross_entropy_forward_f32(float* losses, float* lse, const float* logits, const std::int32_t* targets,
                               std::int64_t N, std::int64_t V) {
#pragma omp parallel for schedule(static) if (N * V > 16384)
  for (std::int64_t n = 0; n < N; ++n) {
    const float* x = logits + n * V;
    float maxval = -std::numeric_limits<float>::infinity();
    for (std::int64_t i = 0; i < V; ++i) maxval = std::max(maxval, x[i]);
    double sum = 0.0;
    for (std::int64_t i = 0; i < V; ++i) sum += std::exp(x[i] - maxval);  // float exp, double sum
    const double row_lse = maxval + std::log(sum);
    lse[n] = static_cast<float>(row_lse);
    losses[n] = targets[n] < 0 ? 0.0f : static_cast<float>(row_lse - x[targets[n]]);
  }
}

// dlogits[N,V] = (softmax(logits) - onehot(target)) * dloss, 0 in ignored rows; may alias logits
void cross_entropy_backward_f32(float* dlogits, const float* logits, const float* lse, const std::int32_t* targets,
                                float dloss, std::int64_t N, std::int64_t V) {
#pragma omp parallel for schedule(static) if (N * V > 16384)
  for (std::int64_t n = 0; n < N; ++n) {
    const float* x = logits + n * V;
    float* d = dlogits + n * V;
    const std::int32_t target = targets[n];
    if (target < 0) {
      std::fill(d, d + V, 0.0f);
      continue;
    }
    const float row_lse = lse[n];
    const float target_logit = x[target];  // read before the row may be overwritten
    for (std::int64_t i = 0; i < V; ++i) d[i] = std::exp(x[i] - row_lse) * dloss;
    d[target] = (std::exp(target_logit - row_lse) - 1.0f) * dloss;
  }
}

// Targets must be < V (negative means ignored).
void check_targets(const char* op, const Tensor& targets, std::int64_t V) {
  const std::int32_t* t = targets.ptr<std::int32_t>();
  for (std::int64_t n = 0; n < targets.numel(); ++n)
    if (t[n] >= V) KernelChecker(op, Device{}).target_out_of_range(n, t[n], V);
}

}  // namespace

void cross_entropy_forward(Tensor& losses, Tensor& lse, const Tensor& logits, const Tensor& targets) {
  const RowsShape s = kernel_check::cross_entropy_forward(Device{}, losses, lse, logits, targets);
  check_targets("cross_entropy_forward", targets, s.cols);
  cross_entropy_forward_f32(losses.ptr<float>(), lse.ptr<float>(), logits.ptr<float>(), targets.ptr<std::int32_t>(),
                            s.rows, s.cols);
}

void cross_entropy_backward(Tensor& dlogits, const Tensor& logits, const Tensor& lse, const Tensor& targets,
                            float dloss) {
  const RowsShape s = kernel_check::cross_entropy_backward(Device{}, dlogits, logits, lse, targets, dloss);
  check_targets("cross_entropy_backward", targets, s.cols);
  cross_entropy_backward_f32(dlogits.ptr<float>(), logits.ptr<float>(), lse.ptr<float>(), targets.ptr<std::int32_t>(),
                             dloss, s.rows, s.cols);
}

}  // namespace neox::cpu
