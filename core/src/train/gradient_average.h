// SPDX-License-Identifier: Apache-2.0
// Data parallelism without a partitioning optimizer: every rank's gradients
// averaged over the ranks, either after backward (whole arena, in buckets)
// or during the last micro-batch's backward (zero_overlap_comm), one unit's
// gradients as soon as backward has finished them. A partitioning optimizer
// (ZeRO) reduces gradients itself instead (Optimizer::reduces_gradients).
#pragma once

#include <cstdint>
#include <vector>

#include "neox/arena.h"
#include "neox/communicator.h"
#include "neox/optimizer.h"

namespace neox {

// Averages `grads` over the ranks in buckets of at most `bucket` elements,
// last layers first (the order backward finishes them).
void all_reduce_in_buckets(Communicator& comm, Tensor& grads, std::int64_t bucket);

// The overlapped average: set as the model's ParameterHooks, it starts each
// unit's all-reduces (in buckets of at most `bucket` elements) when the
// model reports the unit's gradients complete, while backward goes on with
// the units before it.
class OverlappedGradientAverage final : public ParameterHooks {
 public:
  OverlappedGradientAverage(Communicator& comm, ParameterArena& arena, std::int64_t bucket);

  // The next backward is the step's last: reduce during it.
  void arm();
  // After that backward: waits for every reduction (and reduces any unit
  // that backward did not report).
  void finish();

  void gather(int) override {}
  void release(int) override {}
  void gradients_ready(int unit) override;

 private:
  void start(int unit);

  Communicator& comm_;
  ParameterArena& arena_;
  std::int64_t bucket_;
  std::vector<bool> started_;
  bool armed_ = false;
  CommTicket last_ = 0;
};

}  // namespace neox
