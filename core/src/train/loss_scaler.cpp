// SPDX-License-Identifier: Apache-2.0
#include "neox/train/loss_scaler.h"

#include <algorithm>
#include <cmath>

#include "neox/error.h"

namespace neox {

LossScaler::LossScaler(const LossScalerConfig& c)
    : dynamic_(c.loss_scale <= 0.0),
      scale_(c.loss_scale > 0.0 ? c.loss_scale : std::ldexp(1.0, static_cast<int>(c.initial_scale_power))),
      window_(c.loss_scale_window),
      hysteresis_(c.hysteresis),
      min_scale_(c.min_loss_scale),
      cur_hysteresis_(c.hysteresis) {
  if (window_ < 1) throw Error("loss scaler: loss_scale_window must be at least 1");
  if (hysteresis_ < 1) throw Error("loss scaler: hysteresis must be at least 1");
  if (!(min_scale_ > 0.0)) throw Error("loss scaler: min_loss_scale must be positive");
}

void LossScaler::update(bool overflow) {
  if (dynamic_) {
    if (overflow) {
      if (hysteresis_ == 1 || cur_hysteresis_ == 1)
        scale_ = std::max(scale_ / 2.0, min_scale_);
      else
        --cur_hysteresis_;
      last_overflow_ = iteration_;
    } else if ((iteration_ - last_overflow_) % window_ == 0) {
      cur_hysteresis_ = hysteresis_;
      scale_ *= 2.0;
    }
  }
  ++iteration_;
}

std::map<std::string, double> LossScaler::state() const {
  return {{"loss_scale", scale_},
          {"loss_scale_hysteresis", static_cast<double>(cur_hysteresis_)},
          {"loss_scale_iteration", static_cast<double>(iteration_)},
          {"loss_scale_last_overflow", static_cast<double>(last_overflow_)}};
}

void LossScaler::load_state(const std::map<std::string, double>& s) {
  auto get = [&](const char* key, double fallback) {
    auto it = s.find(key);
    return it == s.end() ? fallback : it->second;
  };
  scale_ = get("loss_scale", scale_);
  cur_hysteresis_ = static_cast<std::int64_t>(get("loss_scale_hysteresis", static_cast<double>(cur_hysteresis_)));
  iteration_ = static_cast<std::int64_t>(get("loss_scale_iteration", static_cast<double>(iteration_)));
  last_overflow_ = static_cast<std::int64_t>(get("loss_scale_last_overflow", static_cast<double>(last_overflow_)));
  if (!(scale_ > 0.0) || !std::isfinite(scale_)) throw Error("loss scaler: invalid saved loss_scale");
}

}  // namespace neox
