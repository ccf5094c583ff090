// SPDX-License-Identifier: Apache-2.0
// ParameterArena: every parameter of a model as a view into one flat buffer,
// and every gradient as a view into a second buffer with the same layout.
//
// Layers add their parameters (in the order they are used), each layer's
// closed into a unit, then the model calls allocate() once. Optimizers and
// collectives then work on contiguous slices of params()/grads(); groups()
// gives the runs that share a weight decay setting (biases and norm weights
// are excluded from decay, as in GPT-NeoX).
//
// Partitioning (ZeRO): an optimizer that keeps the parameters or gradients
// partitioned across ranks says so before allocate() (its
// arena_partitioning(), passed to allocate), so that the whole buffers are
// never made (partition() drops them from an arena allocated whole); the
// arena then holds one unit at a time: a unit's parameters while the
// optimizer has gathered them (unit_params, unit_params_ready,
// drop_unit_params), a unit's gradients from their first use in a backward
// until the optimizer has reduced them (drop_unit_grads).
#pragma once

#include <algorithm>
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
  std::string name;  // Hugging Face GPTNeoXForCausalLM name
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
  // The parameters added since the previous close_unit() form one unit (one
  // layer's parameters; see ParameterHooks). allocate() closes a last unit
  // if parameters were added after the last close_unit().
  void close_unit();
  const std::vector<ParamRange>& units() const { return units_; }
  int unit_of(int param_index) const { return unit_of_.at(static_cast<std::size_t>(param_index)); }
  // One buffer for parameters and one for gradients, f32, on the backend,
  // plus, when compute_dtype is bf16 or f16, a third buffer with the
  // parameters in that dtype (the weights the kernels read; the f32
  // parameters are the optimizer's master copy). Gradients start at zero.
  // With `partitioning` (ZeRO, Optimizer::arena_partitioning()) the whole
  // parameter and/or gradient buffers are never made: the arena starts
  // partitioned (see partition()).
  void allocate(Backend& backend, DType compute_dtype = DType::f32, ArenaPartitioning partitioning = {});
  bool allocated() const { return allocated_; }

  const std::vector<ParameterSpec>& specs() const { return specs_; }
  int index(const std::string& name) const;  // throws naming the parameter
  bool contains(const std::string& name) const;
  // f32; counts as a write, like params(). With partitioned parameters only
  // for a gathered unit, and only to read.
  Tensor param(int index) const;
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
  Tensor grads() const { return grads_; }  // undefined when gradients are partitioned

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
  // Bytes of parameters (f32 plus any compute copy) and gradients the arena
  // holds now (with partitioning: the units it holds at the moment).
  std::size_t bytes() const;
  // The most bytes() has been since allocate(): with partitioning, what the
  // units gathered at once and their gradients cost at their worst.
  std::size_t peak_bytes() const { return peak_bytes_; }
  std::int64_t numel() const { return numel_; }

  // Runs of consecutive parameters with the same decay flag.
  std::vector<ParamGroup> groups(float weight_decay) const;
  // Parameter `index`'s initial values by its InitKind, from a generator
  // seeded by `seed` and the index (so the same on every backend, every run
  // and every rank, and independent of the other parameters): a host f32
  // tensor of its shape.
  // (GPTNeoX::initialize writes them through set_parameters.)
  Tensor initial_value(int index, std::uint64_t seed) const;
  void zero_grads(Backend& backend);  // partitioned gradients: drops every unit's

  // ---- Partitioning (see the top of the file)
  // Drops the whole f32 parameters and their compute copy (params = true)
  // and/or the whole gradients (grads = true). Irreversible.
  void partition(bool params, bool grads);
  bool params_partitioned() const { return params_partitioned_; }
  bool grads_partitioned() const { return grads_partitioned_; }
  // The f32 buffer [units()[unit].count] for the optimizer to fill with the
  // unit's parameters: allocated on first use while partitioned, else a view
  // of the whole buffer. Then unit_params_ready() makes the compute copy and
  // counts the unit as gathered until drop_unit_params().
  Tensor unit_params(int unit);
  void unit_params_ready(int unit);
  bool unit_gathered(int unit) const;
  void drop_unit_params(int unit);
  // The unit's gradients [count]: a view of the whole buffer, or, when
  // partitioned, the unit's own buffer (made zeroed on first use by grad()
  // or here) until drop_unit_grads(). has_unit_grads: whether it exists.
  Tensor unit_grads(int unit);
  bool has_unit_grads(int unit) const;
  void drop_unit_grads(int unit);

 private:
  struct UnitBuffers {
    Tensor params;   // f32
    Tensor weights;  // compute copy (bf16/f16 only)
    Tensor grads;    // f32
    bool gathered = false;
  };
  Tensor& ensure_unit_grads(int unit) const;
  void note_bytes() const { peak_bytes_ = std::max(peak_bytes_, bytes()); }
  void check_unit(int unit, const char* op) const;

  std::vector<ParameterSpec> specs_;
  std::map<std::string, int> by_name_;
  std::int64_t numel_ = 0;
  Tensor params_;
  Tensor grads_;
  Tensor weights_;  // compute-dtype copy (undefined for f32)
  DType compute_dtype_ = DType::f32;
  mutable bool weights_stale_ = true;
  std::vector<ParamRange> units_;
  std::vector<int> unit_of_;  // by parameter index
  std::int64_t unit_start_ = 0;
  Backend* backend_ = nullptr;
  bool allocated_ = false;
  bool params_partitioned_ = false;
  bool grads_partitioned_ = false;
  mutable std::vector<UnitBuffers> unit_buffers_;  // by unit, while partitioned
  mutable std::size_t peak_bytes_ = 0;
};

}  // namespace neox
