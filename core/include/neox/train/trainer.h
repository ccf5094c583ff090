// SPDX-License-Identifier: Apache-2.0
// The training loop of `neox train`: GPT-NeoX's concepts and defaults.
//
// One optimizer step = gradient_accumulation_steps micro-batches of
// train_micro_batch_size_per_gpu sequences on each data-parallel rank;
// gradients are averaged over ranks, clipped to a global norm, and AdamW
// steps with the scheduled learning rate. Every log_interval steps a line of
// metrics; every eval_interval steps eval_iters validation micro-batches; a
// checkpoint every checkpoint_factor steps and at the end; the test split at
// the end. SIGINT/SIGTERM (through request_stop) end the run after the
// current step with a checkpoint.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "neox/export.h"
#include "neox/train/config.h"

namespace neox {

// GPT-NeoX's AnnealingLR: linear warm-up from 0 over warmup * train_iters
// steps, then constant, linear, cosine or exponential decay over
// lr_decay_iters (default train_iters), never below min_lr.
class NEOX_API LearningRateSchedule {
 public:
  LearningRateSchedule(const OptimizerConfig& optimizer, std::int64_t train_iters);
  // The rate used for the step taken after `iteration` steps (0-based).
  double at(std::int64_t iteration) const;
  std::int64_t warmup_iters() const { return warmup_iters_; }

 private:
  OptimizerConfig opt_;
  std::int64_t warmup_iters_ = 0;
  std::int64_t decay_iters_ = 0;
};

struct TrainResult {
  std::string run_dir;
  std::int64_t iterations = 0;       // optimizer steps done in total
  std::vector<double> train_losses;  // mean loss of each step this run
  double valid_loss = 0.0;           // last validation loss (0 if none)
  double test_loss = 0.0;            // test loss at the end (0 if none)
  std::string last_checkpoint;       // empty if none was saved
  bool stopped = false;              // ended early by request_stop() or exit_interval
  double overhead = 0.0;             // share of step time outside the model and optimizer
  std::int64_t skipped_steps = 0;    // fp16 steps skipped for inf/NaN gradients (all runs)
  // Bytes this rank sent per training step (the communicator's ring-algorithm
  // count, train_step only: not evaluation or checkpoints), this run.
  double comm_bytes_per_step = 0.0;
};

// Trains as the config says. Throws neox::Error for bad settings or data
// before the first step.
NEOX_API TrainResult train(const Config& config);

// Asks a running train() to save and stop after the current step. Safe to
// call from a signal handler.
NEOX_API void request_stop() noexcept;

}  // namespace neox
