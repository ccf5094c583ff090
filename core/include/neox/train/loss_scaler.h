// SPDX-License-Identifier: Apache-2.0
// LossScaler: fp16 loss scaling with DeepSpeed's dynamic semantics (the
// settings GPT-NeoX configs pass in their "fp16" block).
//
// The loss is multiplied by scale() before backward, so that small fp16
// gradients do not flush to zero; the optimizer divides it out again. A
// step whose gradients hold an infinity or NaN is skipped and reported with
// update(true):
//   * dynamic scaling (loss_scale = 0): the scale starts at
//     2^initial_scale_power. On an overflow, the first hysteresis - 1
//     overflows only use up the hysteresis; after that each overflow halves
//     the scale, never below min_loss_scale. After loss_scale_window steps
//     in a row without an overflow the scale doubles (and the hysteresis is
//     restored).
//   * static scaling (loss_scale > 0): the scale never changes; overflowing
//     steps are still skipped.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "neox/export.h"

namespace neox {

struct LossScalerConfig {
  double loss_scale = 0.0;  // > 0: static scale; 0: dynamic
  std::int64_t initial_scale_power = 16;
  std::int64_t loss_scale_window = 1000;
  std::int64_t hysteresis = 2;
  double min_loss_scale = 1.0;
};

class NEOX_API LossScaler {
 public:
  explicit LossScaler(const LossScalerConfig& config);

  double scale() const { return scale_; }
  bool dynamic() const { return dynamic_; }
  // Records the outcome of one step (in order); overflowing steps are the
  // caller's to skip.
  void update(bool overflow);

  // State for checkpoints, as named numbers (all exact in a double).
  std::map<std::string, double> state() const;
  // Restores what state() returned; keys absent keep their values.
  void load_state(const std::map<std::string, double>& state);

 private:
  bool dynamic_;
  double scale_;
  std::int64_t window_, hysteresis_;
  double min_scale_;
  std::int64_t cur_hysteresis_;
  std::int64_t iteration_ = 0;
  std::int64_t last_overflow_ = -1;
};

}  // namespace neox
