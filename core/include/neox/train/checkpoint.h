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
//
// Verification: state.json records the size and CRC32C of every other file
// of the checkpoint ("files") and facts that must agree (its iteration is the
// directory's step; the data positions are present, non-negative and, for a
// trainer's checkpoint, what its steps consumed). Resolving a checkpoint
// checks them all, and that every weight and optimizer state value is
// finite; a checkpoint that fails is treated like an incomplete one (a save
// directory falls back to the previous complete checkpoint, with a warning).
// Checkpoints saved before checksums were recorded still load, with a note
// that they cannot be verified. A save never writes non-finite weights or
// optimizer state.
//
// Writers lock the save directory (SaveDirectoryLock): one process at a time
// saves there; docs/checkpoints.md.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>

#include "neox/error.h"
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

// A checkpoint that failed a check of its contents after it was resolved:
// the optimizer refused the saved state's values (load_state), e.g. a
// negative exp_avg_sq. The trainer treats it like a corrupted checkpoint and
// falls back to the previous complete one (resolve_checkpoint's `refused`).
class NEOX_API CorruptCheckpoint : public Error {
 public:
  CorruptCheckpoint(const std::string& what, std::string dir) : Error(what), dir_(std::move(dir)) {}
  const std::string& dir() const { return dir_; }  // the global_step directory

 private:
  std::string dir_;
};

// An exclusive lock on a save directory for as long as the object lives:
// flock(2) on SAVE/.lock, which holds "pid <PID> host <HOST>" of the holder
// for the message another writer gets. The kernel releases it when the
// holder dies, so a crashed run never blocks the next one. The trainer holds
// it for the whole run (rank 0: the other ranks write only into rank 0's
// temporary directory, inside the collective save); save_checkpoint takes it
// for the save when this process does not hold it already. On a file system
// without flock the lock is skipped with a warning (and temporary
// directories of other processes are then left alone).
class NEOX_API SaveDirectoryLock {
 public:
  // Creates the directory if needed and locks it; throws neox::Error naming
  // the directory and the PID and host holding it when another process does.
  // A directory it created is removed again at the end when it is empty (a
  // run that failed before its first save leaves nothing behind).
  explicit SaveDirectoryLock(const std::string& save_dir);
  ~SaveDirectoryLock();
  SaveDirectoryLock(const SaveDirectoryLock&) = delete;
  SaveDirectoryLock& operator=(const SaveDirectoryLock&) = delete;

  // Whether this process holds the lock on `save_dir` (through any object).
  static bool held(const std::string& save_dir);

 private:
  std::string key_;   // the directory's canonical path
  std::string dir_;   // SAVE
  std::string file_;  // SAVE/.lock
  int fd_ = -1;
  bool created_ = false;  // the directory did not exist: removed again if still empty
};

// The checkpoint a save directory's `latest` names when that directory
// exists, else its highest-numbered global_step<N> directory, else "": what a
// run saving there would take over. Cheap: nothing is verified.
NEOX_API std::string newest_checkpoint(const std::string& save_dir);

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

// Resolves `path`: a global_step directory, or a save directory with `latest`
// (falling back to the newest complete checkpoint), verifying the
// checkpoint's files and facts (above). `refused`: global_step directories
// (as returned before) to treat as unusable, with the reason to log.
// Throws neox::Error if there is no complete checkpoint there.
NEOX_API std::string resolve_checkpoint(const std::string& path,
                                        const std::map<std::string, std::string>& refused = {});

// The config text stored in a checkpoint.
NEOX_API std::string read_checkpoint_config(const std::string& path);

// Loads weights into `model` (shapes must match) and, when `optimizer` is not
// null, its state; returns the saved state. Errors name the file and tensor;
// CorruptCheckpoint when the optimizer refuses the saved values.
NEOX_API CheckpointState load_checkpoint(const std::string& path, GPTNeoX& model, Optimizer* optimizer);

// Loads only the optimizer state of the checkpoint at `path` (resolved as
// above), resharded to the optimizer's state_ranges(). `parameters` is the
// model's parameter count (checked against the saved one).
NEOX_API void load_optimizer_state(const std::string& path, Optimizer& optimizer, std::int64_t parameters);

}  // namespace neox
