// SPDX-License-Identifier: Apache-2.0
// Optimizer: updates the flat parameter arena from the flat gradient arena.
//
// Made by an `optimizer` plugin. The core calls init() once with the backend,
// the communicator and the layout of the arena (parameter groups are
// contiguous slices with their own weight decay), then step() once per
// optimizer step. The optimizer owns its state (moments, master weights);
// state() exposes it as named tensors for checkpoints, load_state() restores
// it. Errors throw neox::Error.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "neox/tensor.h"
#include "neox/export.h"

namespace neox {

class Backend;
class Communicator;

// A contiguous run of the arena [offset, offset + count) sharing settings.
struct ParamGroup {
  std::int64_t offset = 0;
  std::int64_t count = 0;
  float weight_decay = 0.0f;
};

struct StepContext {
  float lr = 0.0f;
  std::int64_t step = 1;     // 1-based optimizer step
  float grad_scale = 1.0f;   // multiply gradients first (clipping, loss scale)
};

using TensorMap = std::map<std::string, Tensor>;

class NEOX_API Optimizer {
 public:
  virtual ~Optimizer() = default;
  virtual std::string name() const = 0;
  // params and grads are the whole arenas (1-D, equal numel) on the backend.
  virtual void init(Backend& backend, Communicator& comm, const Tensor& params,
                    const Tensor& grads, const std::vector<ParamGroup>& groups) = 0;
  virtual void step(const StepContext& ctx) = 0;
  // Views of the state (on the backend's device); names are stable.
  virtual TensorMap state() = 0;
  // Copies `state` (host or device tensors, names and sizes as from state()).
  virtual void load_state(const TensorMap& state) = 0;
  // Bytes of optimizer state this rank holds (for memory accounting).
  virtual std::int64_t state_bytes() const = 0;
};

}  // namespace neox
