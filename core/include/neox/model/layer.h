// SPDX-License-Identifier: Apache-2.0
// Layer: one step of the model with an explicit forward and backward.
//
// A layer declares its parameters into the arena, then runs forward on one
// micro-batch, keeping what its backward needs (activations it owns, sized
// for the batch). backward() reads the gradient of its output, writes the
// gradient of its input, and accumulates into its parameter gradients.
// Calls alternate: forward, then at most one backward of that forward.
#pragma once

#include <cstdint>
#include <string>

#include "neox/export.h"
#include "neox/tensor.h"

namespace neox {

class Backend;
class ParameterArena;

struct LayerContext {
  Backend* backend = nullptr;
  std::int64_t batch = 0;            // B
  std::int64_t seq = 0;              // T
  std::int64_t position_offset = 0;  // position of the first token
};

class NEOX_API Layer {
 public:
  virtual ~Layer() = default;
  virtual std::string name() const = 0;
  // Adds this layer's parameters; called once, before the arena allocates.
  virtual void declare(ParameterArena& arena) = 0;
  virtual void forward(const LayerContext& ctx, const Tensor& in, Tensor& out) = 0;
  // `din` may be undefined when the input needs no gradient (token ids).
  virtual void backward(const LayerContext& ctx, const Tensor& dout, Tensor& din) = 0;
};

}  // namespace neox
