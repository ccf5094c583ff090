// SPDX-License-Identifier: Apache-2.0
// Optimizer: updates the flat parameter arena from the flat gradient arena.
//
// Made by an `optimizer` plugin. The core calls init() once with the backend,
// the communicator and the arena (parameter groups are contiguous slices
// with their own weight decay), then, for every optimizer step:
//
//   (once) arena_partitioning()       before the model (and its arena) is built
//   (once) init_arena()               then the weights are written, unit by
//                                     unit through hooks() when partitioned
//   zero_grad()                       with the arena's zero_grads()
//   forward/backward of each micro-batch, calling hooks() (if any) as the
//     model uses each unit's parameters
//   reduces_gradients() ? reduce_gradients() and gradient_sum_squares()
//                       : the trainer all-reduces the whole gradient arena
//                         (average over ranks) and takes its norm
//   step()                            unless the step is skipped (fp16 overflow)
//
// The optimizer owns its state (moments, master weights); state() exposes it
// as named tensors for checkpoints, load_state() restores it. A partitioned
// optimizer (ZeRO) holds only part of the state on each rank: state_ranges()
// says which part, and checkpoints store one file per rank and reshard on
// load. Errors throw neox::Error.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "neox/export.h"
#include "neox/tensor.h"

namespace neox {

class Backend;
class Communicator;
class ParameterArena;

// A contiguous run of the arena [offset, offset + count) sharing settings.
struct ParamGroup {
  std::int64_t offset = 0;
  std::int64_t count = 0;
  float weight_decay = 0.0f;
};

// What the run's config asks of the optimizer, given to its factory with
// the plugin's own [plugins.options.<name>] table: [optimizer]'s algorithm
// and Adam constants, and DeepSpeed's zero_optimization settings
// ([training]'s zero_* keys). A plugin honours what it can and refuses the
// rest naming the key (an AdamW plugin asked for another type, a plugin
// that does not partition asked for a ZeRO stage); its options table may
// override the constants. A default-constructed context is PyTorch's AdamW
// without partitioning (what a plugin made outside a run gets).
struct OptimizerContext {
  std::string config = "config";  // the config file, for messages
  std::string type = "adamw";     // optimizer.type: the algorithm
  double beta1 = 0.9;             // optimizer.beta1, beta2, eps
  double beta2 = 0.999;
  double eps = 1e-8;
  std::int64_t zero_stage = 0;                         // training.zero_stage: 0 none; 1, 2, 3 partition over the ranks
  std::int64_t zero_reduce_bucket_size = 500'000'000;  // training.zero_*: elements
  std::int64_t zero_allgather_bucket_size = 500'000'000;
  bool zero_overlap_comm = false;
  bool zero_contiguous_gradients = true;
};

struct StepContext {
  float lr = 0.0f;
  std::int64_t step = 1;    // 1-based optimizer step
  float grad_scale = 1.0f;  // multiply gradients first (clipping, loss scale)
};

using TensorMap = std::map<std::string, Tensor>;

// A run of arena elements [offset, offset + count).
struct ParamRange {
  std::int64_t offset = 0;
  std::int64_t count = 0;
  bool operator==(const ParamRange& o) const { return offset == o.offset && count == o.count; }
};

// What an optimizer keeps partitioned across the ranks instead of whole in
// the parameter arena (ZeRO-2: the gradients; ZeRO-3: the parameters too).
struct ArenaPartitioning {
  bool params = false;
  bool grads = false;
};

// Called by the model as it uses each unit's parameters (a unit is one
// layer's parameters, ParameterArena::units(): 0 the embedding, 1..L the
// transformer blocks, L+1 the final norm and output layer; the output layer
// also reads unit 0 when the embeddings are tied). Lets a ZeRO optimizer
// gather partitioned parameters just in time and reduce each unit's
// gradients as soon as they are complete. gather/release pairs may nest or
// repeat: gather of a gathered unit and release of a released one do
// nothing.
class NEOX_API ParameterHooks {
 public:
  virtual ~ParameterHooks() = default;
  // The model is about to read unit's weights (forward, recompute, backward).
  virtual void gather(int unit) = 0;
  // The model will not read unit's weights until the next gather().
  virtual void release(int unit) = 0;
  // unit's gradients of this micro-batch's backward are complete.
  virtual void gradients_ready(int unit) = 0;
  // unit's parameters were just written whole into the arena's unit buffer
  // (ParameterArena::unit_params: initialisation or a load, which every rank
  // does with the same values; not collective): a hooks object that keeps
  // the parameters partitioned takes its part of them now, before the model
  // releases the unit. The default does nothing.
  virtual void parameters_written(int unit);
};

class NEOX_API Optimizer {
 public:
  virtual ~Optimizer() = default;
  virtual std::string name() const = 0;
  // params and grads are the whole arenas (1-D, equal numel) on the backend.
  virtual void init(Backend& backend, Communicator& comm, const Tensor& params, const Tensor& grads,
                    const std::vector<ParamGroup>& groups) = 0;
  // What the trainer calls instead of init(): the arena itself (ZeRO
  // partitions it). The default calls init() with the arena's whole buffers
  // and its groups for `weight_decay`.
  virtual void init_arena(Backend& backend, Communicator& comm, ParameterArena& arena, float weight_decay);
  // What init_arena() will partition, asked before the model is built, so
  // that the arena never allocates the whole buffers the optimizer would
  // drop (a ZeRO-3 rank never holds the whole model). The model's weights
  // are then written after init_arena(), one unit at a time through hooks()
  // (GPTNeoX::set_parameters). Default: nothing.
  virtual ArenaPartitioning arena_partitioning() const { return {}; }
  virtual void step(const StepContext& ctx) = 0;
  // Views of the state (on the backend's device); names are stable.
  virtual TensorMap state() = 0;
  // Copies `state` (host or device tensors, names and sizes as from state()).
  virtual void load_state(const TensorMap& state) = 0;
  // Bytes of optimizer state this rank holds (for memory accounting).
  virtual std::int64_t state_bytes() const = 0;

  // ---- Data parallelism and partitioning (defaults: a replicated optimizer)

  // Optimizers whose state() tensors mean the same thing (and can load each
  // other's checkpoints) share a state kind: `zero` and `adamw` are both
  // "adamw".
  virtual std::string state_kind() const { return name(); }
  // true: this rank's state covers only state_ranges() of the arena (ZeRO);
  // false: the whole arena on every rank (state_ranges() is not asked).
  virtual bool partitions_state() const { return false; }
  // With partitions_state(): the arena ranges this rank's state tensors
  // cover, in order; each state tensor is their concatenation, one f32
  // element per parameter element. May be empty: a rank can own nothing
  // (more ranks than elements in every piece) and still writes its shard.
  virtual std::vector<ParamRange> state_ranges() const { return {}; }
  // Bytes of parameters and gradients held by the optimizer itself (ZeRO's
  // master weights and gradient partitions); the arena counts its own.
  virtual std::int64_t parameter_bytes() const { return 0; }
  // Called by the model around its use of parameters; null: no hooks.
  virtual ParameterHooks* hooks() { return nullptr; }
  // Called at the start of every step, with the arena's zero_grads().
  virtual void zero_grad() {}
  // true: the optimizer averages gradients over the data-parallel ranks
  // itself (in hooks() and reduce_gradients()) and computes their norm; the
  // trainer then never touches the whole gradient arena.
  virtual bool reduces_gradients() const { return false; }
  virtual void reduce_gradients() {}
  // The sum of squares of the averaged gradients over the whole model (every
  // rank gets the same value). Only called when reduces_gradients().
  virtual double gradient_sum_squares();
};

}  // namespace neox
