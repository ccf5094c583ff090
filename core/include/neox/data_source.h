// SPDX-License-Identifier: Apache-2.0
// DataSource: batches of token ids with loss masks.
//
// Made by a `data` plugin with its options and a DataContext. Batches are on
// the host; the trainer moves them to the device. A source is deterministic
// for a given seed, and its position can be saved and restored so that a
// resumed run sees exactly the batches it would have seen.
#pragma once

#include <cstdint>
#include <string>

#include "neox/export.h"
#include "neox/tensor.h"

namespace neox {

enum class Split { train, valid, test };
const char* split_name(Split s);

struct DataContext {
  std::int64_t seq_length = 0;
  std::int64_t micro_batch_size = 0;
  std::int64_t vocab_size = 0;  // ids must be below this
  std::uint64_t seed = 0;
  std::int64_t train_samples = 0;  // samples the run will draw per split
  std::int64_t valid_samples = 0;
  std::int64_t test_samples = 0;
  int dp_rank = 0;  // this rank's share of each global batch
  int dp_size = 1;
};

struct Batch {
  Tensor input_ids;  // i64 [B,T]
  Tensor labels;     // i64 [B,T]
  Tensor loss_mask;  // f32 [B,T], 0 where the position is not trained on
};

class NEOX_API DataSource {
 public:
  virtual ~DataSource() = default;
  virtual std::string name() const = 0;
  // Number of samples available in a split (0 if the split is empty).
  virtual std::int64_t num_samples(Split split) const = 0;
  // The next micro-batch of the split; wraps around at the end.
  virtual Batch next(Split split) = 0;
  // Samples consumed so far in a split, and restoring that position.
  virtual std::int64_t position(Split split) const = 0;
  virtual void seek(Split split, std::int64_t position) = 0;
};

}  // namespace neox
