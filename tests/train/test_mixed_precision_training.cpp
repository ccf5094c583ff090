// SPDX-License-Identifier: Apache-2.0
// Training in bf16 and fp16 on the CPU backend: bf16 follows the fp32 loss
// curve; fp16 with dynamic loss scaling skips overflowing steps, lowers the
// scale and resumes from a checkpoint with it. (The loss scaler, bf16
// against the oracle and activation checkpointing: tests/unit/test_mixed_precision.cpp.)
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "neox/train/config.h"
#include "neox/train/trainer.h"
#include "test_support.h"

namespace fs = std::filesystem;

namespace {

// Mean of losses [begin, end).
double mean(const std::vector<double>& v, std::size_t begin, std::size_t end) {
  double s = 0;
  for (std::size_t i = begin; i < end; ++i) s += v[i];
  return s / static_cast<double>(end - begin);
}

std::string temp_dir(const std::string& name) { return neox::test::temp_dir("neox_mp", name); }

// A small model on GPT-NeoX's test corpus.
neox::Config train_config(const std::string& dir, const std::string& precision, int iters) {
  const std::string text = R"([plugins]
data = "mmap"
[plugins.options.mmap]
data_path = ")" + neox::test::testdata_dir() +
                           R"(/megatron/corpus_a"
split = "90,5,5"
[model]
num_layers = 2
hidden_size = 32
num_attention_heads = 2
vocab_size = 1000
seq_length = 16
max_position_embeddings = 16
rotary_pct = 0.25
gpt_j_residual = true
[optimizer]
lr = 1e-2
warmup = 0.1
[training]
train_micro_batch_size_per_gpu = 4
train_iters = )" + std::to_string(iters) +
                           R"(
eval_iters = 0
log_interval = 10
log_dir = ")" + dir + R"(/runs"
precision = ")" + precision +
                           R"("
)";
  return neox::parse_config(text, dir + "/config.toml");
}

TEST(MixedPrecisionTraining, Bf16FollowsTheFp32LossCurve) {
  const std::string dir = temp_dir("bf16");
  const int steps = 40;
  const auto fp32 = neox::train(train_config(dir, "fp32", steps));
  const auto bf16 = neox::train(train_config(dir, "bf16", steps));
  ASSERT_EQ(bf16.train_losses.size(), static_cast<std::size_t>(steps));
  EXPECT_LT(mean(fp32.train_losses, steps - 5, steps), mean(fp32.train_losses, 0, 5) - 0.5)
      << "the run must learn something";
  EXPECT_LT(std::abs(bf16.train_losses.back() - fp32.train_losses.back()) / fp32.train_losses.back(), 0.02);
  double worst = 0;
  for (std::size_t i = 0; i < bf16.train_losses.size(); ++i)
    worst = std::max(worst, std::abs(bf16.train_losses[i] - fp32.train_losses[i]) / fp32.train_losses[i]);
  EXPECT_LT(worst, 0.03) << "largest step-by-step difference";
  EXPECT_GT(worst, 0.0) << "bf16 identical to fp32: is bf16 in use?";
  EXPECT_EQ(bf16.skipped_steps, 0);
  fs::remove_all(dir);
}

TEST(MixedPrecisionTraining, Fp16SkipsOverflowingStepsLowersTheScaleAndResumes) {
  const std::string dir = temp_dir("fp16");
  neox::Config c = train_config(dir, "fp16", 40);
  // dlogits are (softmax - onehot) * scale / 64 tokens: fp16 (largest
  // 65504 ~ 2^16) overflows until the scale is below about 2^22.
  c.training.initial_scale_power = 26;
  c.training.hysteresis = 1;
  c.training.save = dir + "/ckpt";
  c.training.checkpoint_factor = 30;
  const auto r = neox::train(c);
  ASSERT_EQ(r.train_losses.size(), 40u);
  // Halving from 2^26 until the gradients fit (below about 2^18 here).
  EXPECT_GE(r.skipped_steps, 3);
  EXPECT_LE(r.skipped_steps, 12);
  EXPECT_LT(mean(r.train_losses, 35, 40), mean(r.train_losses, 0, 5) - 0.3) << "the unskipped steps train";
  // The scaler's state travels with the checkpoint.
  std::ifstream state(dir + "/ckpt/global_step30/state.json");
  const auto j = nlohmann::json::parse(state);
  ASSERT_TRUE(j.contains("trainer"));
  EXPECT_GT(j["trainer"]["skipped_steps"].get<double>(), 0);
  EXPECT_LT(j["trainer"]["loss_scale"].get<double>(), std::ldexp(1.0, 26));
  // Resuming from step 30 gives the uninterrupted run's last losses.
  neox::Config resume = c;
  resume.training.load = dir + "/ckpt/global_step30";
  resume.training.save = "";
  const auto r2 = neox::train(resume);
  ASSERT_EQ(r2.train_losses.size(), 10u);
  for (std::size_t i = 0; i < 10; ++i) EXPECT_EQ(r2.train_losses[i], r.train_losses[30 + i]) << i;
  EXPECT_EQ(r2.skipped_steps, r.skipped_steps);
  // The log says what happened.
  const std::string log = neox::test::read_text(r.run_dir + "/train.log");
  EXPECT_NE(log.find("inf/NaN gradients at loss scale"), std::string::npos);
  fs::remove_all(dir);
}

}  // namespace
