// SPDX-License-Identifier: Apache-2.0
// The learning-rate schedule against values of GPT-NeoX's AnnealingLR
// (megatron/learning_rates.py) for lr 6e-4, warmup 0.1, 100 decay steps,
// min_lr 6e-5, worked out from its formulas in float64.
#include <gtest/gtest.h>

#include <cmath>

#include "neox/train/trainer.h"

namespace {

struct Case {
  const char* style;
  std::vector<double> lr;  // at iterations 0, 1, 5, 10, 11, 50, 99, 100, 150
};

TEST(LearningRate, MatchesGptNeoxAnnealingLR) {
  const std::vector<std::int64_t> its = {0, 1, 5, 10, 11, 50, 99, 100, 150};
  const std::vector<Case> cases = {
      {"constant", {0.0, 6e-5, 3e-4, 6e-4, 6e-4, 6e-4, 6e-4, 6e-4, 6e-4}},
      {"linear", {0.0, 6e-5, 3e-4, 6e-4, 5.94e-4, 3.6e-4, 1.2e-4, 1.2e-4, 1.2e-4}},
      {"cosine", {0.0, 6e-5, 3e-4, 6e-4, 5.998519681097194e-4, 3.927050983124842e-4, 6e-5, 6e-5, 6e-5}},
      {"exponential",
       {0.0, 6e-5, 3e-4, 6e-4, 5.958563742463242e-4, 4.5474174082269924e-4, 3.446500847440983e-4, 3.446500847440983e-4,
        3.446500847440983e-4}},
  };
  for (const auto& c : cases) {
    neox::OptimizerConfig opt;
    opt.lr = 6e-4;
    opt.min_lr = 6e-5;
    opt.warmup = 0.1;
    opt.lr_decay_style = c.style;
    opt.lr_decay_iters = 0;  // train_iters
    neox::LearningRateSchedule s(opt, 100);
    EXPECT_EQ(s.warmup_iters(), 10);
    for (std::size_t i = 0; i < its.size(); ++i)
      EXPECT_NEAR(s.at(its[i]), c.lr[i], 1e-12 * 6e-4) << c.style << " at iteration " << its[i];
  }
}

TEST(LearningRate, NoWarmupStartsAtTheFullRate) {
  neox::OptimizerConfig opt;
  opt.lr = 1e-3;
  opt.warmup = 0.0;
  opt.lr_decay_style = "constant";
  neox::LearningRateSchedule s(opt, 3);
  EXPECT_DOUBLE_EQ(s.at(0), 1e-3);
  EXPECT_DOUBLE_EQ(s.at(2), 1e-3);
}

TEST(LearningRate, DecayItersOverrideTrainIters) {
  neox::OptimizerConfig opt;
  opt.lr = 1.0;
  opt.warmup = 0.0;
  opt.lr_decay_style = "linear";
  opt.lr_decay_iters = 10;
  neox::LearningRateSchedule s(opt, 1000);
  EXPECT_DOUBLE_EQ(s.at(5), 0.5);
  EXPECT_DOUBLE_EQ(s.at(10), 0.0);
  EXPECT_DOUBLE_EQ(s.at(500), 0.0);
}

}  // namespace
