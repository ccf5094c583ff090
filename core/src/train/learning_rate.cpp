// SPDX-License-Identifier: Apache-2.0
// GPT-NeoX's AnnealingLR (megatron/learning_rates.py), step for step: the
// warm-up length is warmup * lr_decay_iters (a real number), the decay
// formulas divide by lr_decay_iters, and min_lr is a floor.
#include <algorithm>
#include <cmath>

#include "neox/train/trainer.h"

namespace neox {

LearningRateSchedule::LearningRateSchedule(const OptimizerConfig& optimizer, std::int64_t train_iters)
    : opt_(optimizer) {
  decay_iters_ = optimizer.lr_decay_iters > 0 ? optimizer.lr_decay_iters : std::max<std::int64_t>(train_iters, 1);
  warmup_iters_ = static_cast<std::int64_t>(std::ceil(optimizer.warmup * static_cast<double>(decay_iters_)));
}

double LearningRateSchedule::at(std::int64_t iteration) const {
  const double start = opt_.lr;
  const double warmup = opt_.warmup * static_cast<double>(decay_iters_);
  const double end = static_cast<double>(decay_iters_);
  const double it = static_cast<double>(iteration);
  double n = std::min(it, end - warmup);
  if (warmup > 0.0 && it <= warmup) return start * n / warmup;
  n -= warmup;
  double lr = start;
  if (opt_.lr_decay_style == "linear")
    lr = start * (end - n) / end;
  else if (opt_.lr_decay_style == "cosine")
    lr = start / 2.0 * (std::cos(M_PI * n / end) + 1.0);
  else if (opt_.lr_decay_style == "exponential")
    lr = start * std::exp(-0.693 * n / end);
  return std::max(lr, opt_.min_lr);
}

}  // namespace neox
