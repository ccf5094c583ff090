// SPDX-License-Identifier: Apache-2.0
// Training checkpoints.
//
// Layout of a save directory:
//   SAVE/global_step<N>/model.safetensors      weights, Hugging Face names and layout
//   SAVE/global_step<N>/optimizer.safetensors  the optimizer's state() tensors, or
//   SAVE/global_step<N>/optimizer.rank<R>.safetensors  for a partitioned optimizer
//                                              (ZeRO), one per rank: its state() tensors and
//                                              "arena_ranges" (i64 [k, 2]: offset, count) saying
//                                              which parameters they cover
//   SAVE/global_step<N>/state.json             iteration, data positions, RNG, neox version
//   SAVE/global_step<N>/config.toml            the config the run used
//   SAVE/global_step<N>/tokenizer.json         the run's tokenizer files, when it names
//     (or vocab.json + merges.txt)             one ([tokenizer]; config.toml refers to them)
//   SAVE/latest                                "global_step<N>" of the newest complete one
// A checkpoint is written into SAVE/.tmp-global_step<N>-<pid> and renamed into
// place only when every file is complete and synced; `latest` is then
// replaced atomically, and only after that are old checkpoints pruned. A
// crash at any point leaves the previous checkpoint loadable. In a
// multi-rank save rank 0 makes the temporary directory, every rank writes
// its optimizer shard into it (the save directory must be on a file system
// every rank sees), and rank 0 installs it only when all ranks succeeded.
//
// Loading reshards: a partitioned optimizer's state is assembled from the
// saved shards for the ranges it now owns (state_ranges()), whatever the
// number of ranks that saved it; a whole optimizer.safetensors and a set of
// shards are interchangeable between optimizers of the same state_kind().
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "neox/export.h"

namespace neox {

class Communicator;
class GPTNeoX;
class Optimizer;

struct CheckpointState {
  std::int64_t iteration = 0;                          // optimizer steps done
  std::map<std::string, std::int64_t> data_positions;  // split name -> samples consumed
  std::string rng_state;                               // the trainer's generator, serialised
  std::string config_toml;                             // the config text used
  std::map<std::string, double> trainer_values;        // counters and scaler state (e.g. skipped_steps)
  // Saving only: files copied into the checkpoint directory, name -> source
  // path (the tokenizer's tokenizer.json, or vocab.json and merges.txt).
  std::map<std::string, std::string> files;
};

// Saves and returns the checkpoint directory. keep_last > 0 keeps only the
// newest keep_last checkpoints in save_dir (older global_step* are removed
// after the new one is in place); 0 keeps all. `optimizer` may be null.
// With `comm`, a collective call: every rank calls it with the same
// arguments; rank 0 writes the model, the config and state.json; a
// partitioned optimizer's shards come from every rank, and partitioned
// parameters (ZeRO-3) are gathered one unit at a time by every rank while
// rank 0 writes them (write_hf_safetensors). A failure on any rank throws
// on every rank and installs nothing.
NEOX_API std::string save_checkpoint(const std::string& save_dir, GPTNeoX& model, Optimizer* optimizer,
                                     const CheckpointState& state, int keep_last, Communicator* comm = nullptr);

// Resolves `path`: a global_step directory, or a save directory with `latest`.
// Throws neox::Error if there is no complete checkpoint there.
NEOX_API std::string resolve_checkpoint(const std::string& path);

// The config text stored in a checkpoint.
NEOX_API std::string read_checkpoint_config(const std::string& path);

// Loads weights into `model` (shapes must match) and, when `optimizer` is not
// null, its state; returns the saved state. Errors name the file and tensor.
NEOX_API CheckpointState load_checkpoint(const std::string& path, GPTNeoX& model, Optimizer* optimizer);

// Loads only the optimizer state of the checkpoint at `path` (resolved as
// above), resharded to the optimizer's state_ranges(). `parameters` is the
// model's parameter count (checked against the saved one).
NEOX_API void load_optimizer_state(const std::string& path, Optimizer& optimizer, std::int64_t parameters);

}  // namespace neox
