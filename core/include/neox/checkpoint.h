// SPDX-License-Identifier: Apache-2.0
// Training checkpoints.
//
// Layout of a save directory:
//   SAVE/global_step<N>/model.safetensors      weights, Hugging Face names and layout
//   SAVE/global_step<N>/optimizer.safetensors  the optimizer's state() tensors
//   SAVE/global_step<N>/state.json             iteration, data positions, RNG, neox version
//   SAVE/global_step<N>/config.toml            the config the run used
//   SAVE/latest                                "global_step<N>" of the newest complete one
// A checkpoint is written into SAVE/.tmp-global_step<N>-<pid> and renamed into
// place only when every file is complete and synced; `latest` is then
// replaced atomically, and only after that are old checkpoints pruned. A
// crash at any point leaves the previous checkpoint loadable.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "neox/export.h"

namespace neox {

class GPTNeoX;
class Optimizer;

struct CheckpointState {
  std::int64_t iteration = 0;                           // optimizer steps done
  std::map<std::string, std::int64_t> data_positions;   // split name -> samples consumed
  std::string rng_state;                                // the trainer's generator, serialised
  std::string config_toml;                              // the config text used
  std::map<std::string, double> trainer_values;         // counters and scaler state (e.g. skipped_steps)
};

// Saves and returns the checkpoint directory. keep_last > 0 keeps only the
// newest keep_last checkpoints in save_dir (older global_step* are removed
// after the new one is in place); 0 keeps all. `optimizer` may be null.
NEOX_API std::string save_checkpoint(const std::string& save_dir, const GPTNeoX& model,
                                     Optimizer* optimizer, const CheckpointState& state, int keep_last);

// Resolves `path`: a global_step directory, or a save directory with `latest`.
// Throws neox::Error if there is no complete checkpoint there.
NEOX_API std::string resolve_checkpoint(const std::string& path);

// The config text stored in a checkpoint.
NEOX_API std::string read_checkpoint_config(const std::string& path);

// Loads weights into `model` (shapes must match) and, when `optimizer` is not
// null, its state; returns the saved state. Errors name the file and tensor.
NEOX_API CheckpointState load_checkpoint(const std::string& path, GPTNeoX& model, Optimizer* optimizer);

}  // namespace neox
