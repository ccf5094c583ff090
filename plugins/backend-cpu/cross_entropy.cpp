// SPDX-License-Identifier: Apache-2.0
// Softmax cross-entropy over the last dimension; negative targets are ignored.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "check.h"
#include "ops.h"

namespace neox::cpu {
namespace {

// losses[N], lse[N] from logits[N,V], targets[N]; exp sums in double
void cross_entropy_forward_f32(float* losses, float* lse, const float* logits,
                               const std::int32_t* targets, std::int64_t N, std::int64_t V) {
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
void cross_entropy_backward_f32(float* dlogits, const float* logits, const float* lse,
                                const std::int32_t* targets, float dloss, std::int64_t N,
                                std::int64_t V) {
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
    if (t[n] >= V)
      fail(op, "target " + std::to_string(t[n]) + " in row " + std::to_string(n) +
                   " is outside the vocabulary [0, " + std::to_string(V) +
                   ") (negative targets mark ignored positions)");
}

}  // namespace

void cross_entropy_forward(Tensor& losses, Tensor& lse, const Tensor& logits,
                           const Tensor& targets) {
  const char* op = "cross_entropy_forward";
  MatrixShape m = require_matrix(logits, DType::f32, op, "logits");
  const std::string per_row = "one per row of logits " + logits.str();
  require_numel(targets, DType::i32, m.rows, op, "targets", per_row);
  require_numel(losses, DType::f32, m.rows, op, "losses", per_row);
  require_numel(lse, DType::f32, m.rows, op, "lse", per_row);
  if (m.cols == 0 && m.rows > 0) fail(op, "logits " + logits.str() + " has an empty vocabulary");
  require_disjoint(losses, logits, op, "losses", "logits");
  require_disjoint(lse, logits, op, "lse", "logits");
  require_disjoint(losses, lse, op, "losses", "lse");
  check_targets(op, targets, m.cols);
  cross_entropy_forward_f32(losses.ptr<float>(), lse.ptr<float>(), logits.ptr<float>(),
                            targets.ptr<std::int32_t>(), m.rows, m.cols);
}

void cross_entropy_backward(Tensor& dlogits, const Tensor& logits, const Tensor& lse,
                            const Tensor& targets, float dloss) {
  const char* op = "cross_entropy_backward";
  MatrixShape m = require_matrix(logits, DType::f32, op, "logits");
  const std::string per_row = "one per row of logits " + logits.str();
  require_matrix_shape(dlogits, DType::f32, m.rows, m.cols, op, "dlogits",
                       "the shape of logits " + logits.str());
  require_numel(targets, DType::i32, m.rows, op, "targets", per_row);
  require_numel(lse, DType::f32, m.rows, op, "lse", per_row);
  if (dlogits.data() != logits.data()) require_disjoint(dlogits, logits, op, "dlogits", "logits");
  require_disjoint(dlogits, lse, op, "dlogits", "lse");
  check_targets(op, targets, m.cols);
  cross_entropy_backward_f32(dlogits.ptr<float>(), logits.ptr<float>(), lse.ptr<float>(),
                             targets.ptr<std::int32_t>(), dloss, m.rows, m.cols);
}

}  // namespace neox::cpu
