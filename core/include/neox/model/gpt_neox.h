// SPDX-License-Identifier: Apache-2.0
// GPTNeoX: the model, one explicit sequence of its layers (token embedding,
// num_layers transformer blocks, output layer) over one parameter arena; and
// the key/value cache of generation.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "neox/arena.h"
#include "neox/export.h"
#include "neox/model/model_config.h"
#include "neox/tensor.h"

namespace neox {

class Backend;
class GPTNeoX;
namespace layers {
struct LayerContext;
}  // namespace layers

// The key/value cache of generation: every layer's keys and values for a
// batch of sequences that grow a chunk at a time, plus the activations of
// the newest chunk (sized for the chunk, reused while its size stays).
// Made by GPTNeoX::make_cache and used only with that model; movable, not
// copyable. All sequences of the batch are at the same position.
class NEOX_API InferenceCache {
 public:
  InferenceCache();
  ~InferenceCache();
  InferenceCache(InferenceCache&&) noexcept;
  InferenceCache& operator=(InferenceCache&&) noexcept;
  InferenceCache(const InferenceCache&) = delete;
  InferenceCache& operator=(const InferenceCache&) = delete;

  bool defined() const { return state_ != nullptr; }
  std::int64_t batch() const;
  // Positions per sequence the cache holds at most (prompt + generated).
  std::int64_t max_tokens() const;
  // Tokens cached per sequence: the position of the next token.
  std::int64_t length() const;
  // Forgets every token (length 0) and keeps the memory, for a new batch.
  void reset();

 private:
  friend class GPTNeoX;
  struct State;
  std::unique_ptr<State> state_;
};

// The model. Parameters live in one arena on the backend; activations are
// allocated per batch shape and reused while the shape stays the same.
class NEOX_API GPTNeoX {
 public:
  // `partitioning`: what the optimizer keeps partitioned across ranks
  // instead of whole (Optimizer::arena_partitioning(): ZeRO-2 the
  // gradients, ZeRO-3 the parameters too). The arena never allocates those
  // buffers whole; partitioned parameters are written by set_parameters()
  // once the optimizer's init_arena() has run and its hooks are set.
  GPTNeoX(const ModelConfig& config, std::shared_ptr<Backend> backend, ComputeOptions compute = {},
          ArenaPartitioning partitioning = {});
  ~GPTNeoX();
  GPTNeoX(const GPTNeoX&) = delete;
  GPTNeoX& operator=(const GPTNeoX&) = delete;

  const ModelConfig& config() const { return config_; }
  const ComputeOptions& compute() const { return compute_; }
  Backend& backend() const { return *backend_; }
  ParameterArena& arena() { return arena_; }
  const ParameterArena& arena() const { return arena_; }

  // Initialises weights with GPT-NeoX's init methods from `seed` (through
  // set_parameters: the same values whether or not they are partitioned).
  void initialize(std::uint64_t seed);
  // Writes every parameter, one unit at a time: write(index, dst) fills
  // parameter `index` of the arena (dst: f32, its shape, on the backend).
  // With partitioned parameters each unit is whole only while it is
  // written; the hooks then take their part (parameters_written) and the
  // unit is released, so no rank ever holds the whole model. Every rank
  // writes the same values; not a collective call.
  void set_parameters(const std::function<void(int index, Tensor& dst)>& write);

  // Logits [B,T,padded_vocab] on the backend, in the compute dtype, for
  // input_ids [B,T] (i64 or i32, host or device). The view is valid until
  // the next forward.
  Tensor forward(const Tensor& input_ids, std::int64_t position_offset = 0);
  // Forward, then the mean cross-entropy against labels [B,T] over positions
  // whose label is >= 0 and whose loss_mask (if given, f32 [B,T]) is non-zero.
  double forward_loss(const Tensor& input_ids, const Tensor& labels, const Tensor& loss_mask = Tensor());
  // The logits [B,T,padded_vocab] of the last forward (or forward_loss), until
  // the next forward or backward (backward overwrites them with gradients).
  Tensor logits() const;
  // Backward of the last forward_loss: accumulates d(loss * loss_scale) into
  // the gradient arena.
  void backward(float loss_scale = 1.0f);

  // Inference with a key/value cache (generation). The cache holds `batch`
  // sequences of up to max_tokens positions; with learned position
  // embeddings max_tokens is at most max_position_embeddings.
  InferenceCache make_cache(std::int64_t batch, std::int64_t max_tokens);
  // Runs input_ids [B,Tq] (i64 or i32 on the host, or i32 on the device) as
  // the tokens at positions cache.length() .. cache.length()+Tq-1 of each
  // sequence, attending to everything cached before them, appends them to the
  // cache and returns their logits [B,Tq,padded_vocab] (f32 whatever the
  // compute dtype); with last_only, only
  // the logits of each sequence's last new token, [B,1,padded_vocab] (the
  // others are not unembedded). The view lives in the cache until its next
  // forward_cached. Running a sequence in chunks gives forward()'s logits up
  // to rounding. Uses the same kernels as forward() (attention_decode for
  // the attention) but none of its buffers: forward, forward_loss, backward
  // and logits() are unaffected, and the two may be interleaved.
  Tensor forward_cached(const Tensor& input_ids, InferenceCache& cache, bool last_only = false);

  // Hooks called as the model uses each unit's parameters (units() of the
  // arena: one per layer; see ParameterHooks). Null (the default): none.
  // Set by the trainer from the optimizer (ZeRO); must outlive its use.
  void set_parameter_hooks(ParameterHooks* hooks) { hooks_ = hooks; }
  ParameterHooks* parameter_hooks() const { return hooks_; }

  // Bytes of the activation buffers held for the current batch shape
  // (training path: residual stream, logits, per-block buffers, scratch).
  std::size_t activation_bytes() const;

  // Floating-point operations of one forward+backward token (PaLM: 6N +
  // 12 L H Q T, N without embeddings), for MFU.
  double flops_per_token() const;

 private:
  void ensure_batch(std::int64_t B, std::int64_t T);
  // Forward of block l (0-based) from the stream's input l into `out`, in
  // the buffers of its slot.
  void run_block(const layers::LayerContext& ctx, std::int64_t l, Tensor& out);
  // The hooks around unit u (no-ops without hooks).
  void gather(int u);
  void release(int u);
  void gradients_ready(int u);
  // The units the output layer reads: its own, and the embedding's if tied.
  void gather_output();
  void release_output();
  // Parameter units: 0 the embedding, 1..num_layers the blocks, then the output layer.
  int output_unit() const { return static_cast<int>(config_.num_layers) + 1; }
  ModelConfig config_;
  ParameterHooks* hooks_ = nullptr;
  bool keep_output_ = false;  // forward_loss: the output units stay gathered for backward
  ComputeOptions compute_;
  std::shared_ptr<Backend> backend_;
  ParameterArena arena_;
  struct Layers;  // the layers themselves (core/src/model/layers.h)
  std::unique_ptr<Layers> layers_;
  struct Activations;
  std::unique_ptr<Activations> acts_;
};

}  // namespace neox
