// SPDX-License-Identifier: Apache-2.0
// ParameterArena: every parameter of a model as a view into one flat buffer,
// and every gradient as a view into a second buffer with the same layout.
//
// Layers add their parameters (in the order they are used), then the model
// calls allocate() once. Optimizers and collectives then work on contiguous
// slices of params()/grads(); groups() gives the runs that share a weight
// decay setting (biases and norm weights are excluded from decay, as in
// GPT-NeoX).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "neox/export.h"
#include "neox/optimizer.h"
#include "neox/tensor.h"

namespace neox {

class Backend;

enum class InitKind { zeros, ones, normal };

struct ParameterSpec {
  std::string name;   // Hugging Face GPTNeoXForCausalLM name
  Shape shape;
  bool decay = true;  // false for biases and LayerNorm parameters
  InitKind init = InitKind::normal;
  float init_std = 0.02f;
  std::int64_t offset = 0;  // elements from the arena start (set by allocate)
};

class NEOX_API ParameterArena {
 public:
  // Adds a parameter before allocate(); returns its index.
  int add(ParameterSpec spec);
  // One buffer for parameters and one for gradients, f32, on the backend,
  // plus, when compute_dtype is bf16 or f16, a third buffer with the
  // parameters in that dtype (the weights the kernels read; the f32
  // parameters are the optimizer's master copy). Gradients start at zero.
  void allocate(Backend& backend, DType compute_dtype = DType::f32);
  bool allocated() const { return params_.defined(); }

  const std::vector<ParameterSpec>& specs() const { return specs_; }
  int index(const std::string& name) const;  // throws naming the parameter
  bool contains(const std::string& name) const;
  Tensor param(int index) const;  // f32; counts as a write, like params()
  Tensor grad(int index) const;
  Tensor param(const std::string& name) const { return param(index(name)); }
  Tensor grad(const std::string& name) const { return grad(index(name)); }
  // The f32 parameters. Taking them counts as a write (the compute copy is
  // marked stale): a caller that keeps the view and writes later, as an
  // optimizer does, calls mark_params_changed() after each write.
  Tensor params() const {
    weights_stale_ = true;
    return params_;
  }
  Tensor grads() const { return grads_; }

  // Mixed precision. weight(i) is parameter i in the compute dtype: the f32
  // parameter itself when the compute dtype is f32, else its copy, which
  // refresh_weights() makes current. Whoever writes the f32 parameters
  // (optimizer step, checkpoint or Hugging Face load, initialise) calls
  // mark_params_changed(); the model refreshes before each forward.
  DType compute_dtype() const { return compute_dtype_; }
  Tensor weight(int index) const;
  Tensor weights() const { return compute_dtype_ == DType::f32 ? params_ : weights_; }
  void mark_params_changed() { weights_stale_ = true; }
  // Converts the f32 parameters into the compute copy if they changed.
  void refresh_weights(Backend& backend);
  // Bytes of parameters (f32 plus any compute copy) and gradients.
  std::size_t bytes() const;
  std::int64_t numel() const { return numel_; }

  // Runs of consecutive parameters with the same decay flag.
  std::vector<ParamGroup> groups(float weight_decay) const;
  // Fills parameters by their InitKind from a seeded generator (same values
  // on every backend and every run for the same seed).
  void initialize(Backend& backend, std::uint64_t seed);
  void zero_grads(Backend& backend);

 private:
  std::vector<ParameterSpec> specs_;
  std::map<std::string, int> by_name_;
  std::int64_t numel_ = 0;
  Tensor params_;
  Tensor grads_;
  Tensor weights_;  // compute-dtype copy (undefined for f32)
  DType compute_dtype_ = DType::f32;
  mutable bool weights_stale_ = true;
};

}  // namespace neox
