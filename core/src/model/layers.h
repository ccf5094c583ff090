// SPDX-License-Identifier: Apache-2.0
// The GPT-NeoX layers (internal to the library): token embedding,
// transformer block, and the output head (final LayerNorm + unembedding),
// each with an explicit forward and backward in the style of llm.c.
//
// A layer declares its parameters into the arena once, before the arena
// allocates; forward() runs one micro-batch and keeps what its backward
// needs; backward() reads the gradient of its output, writes the gradient
// of its input and accumulates into its parameter gradients. Calls
// alternate: forward, then at most one backward of that forward.
// forward_cached() is the inference path (generation): it keeps nothing
// for backward, so it may run between a forward and its backward.
#pragma once

#include <memory>

#include "neox/backend.h"
#include "neox/error.h"
#include "neox/model/gpt_neox.h"

namespace neox::layers {

// The batch a layer call runs on.
struct LayerContext {
  Backend* backend = nullptr;
  std::int64_t batch = 0;            // B
  std::int64_t seq = 0;              // T
  std::int64_t position_offset = 0;  // position of the first token
};

// Gradient buffers the blocks share during backward (one block runs at a
// time), sized by the model for the current batch. N = B*T.
struct BlockScratch {
  Tensor d_ln;    // [N, C]
  Tensor d_attn;  // [N, C]
  Tensor d_res;   // [N, C]
  Tensor d_qkv;   // [N, 3C]
  Tensor d_fc;    // [N, F]
};

// The buffers one forward of a transformer block writes, N = B*T rows.
// Training keeps one set per block for its backward (one set per block of a
// chunk with activation checkpointing); inference (see forward_cached)
// shares one set among all blocks. Activations are in the compute dtype,
// the LayerNorm statistics in f32.
struct BlockBuffers {
  Tensor ln1, ln1_mean, ln1_rstd;  // [N,C], [N], [N]
  Tensor qkv;                      // [N,3C] after rotary
  Tensor attn;                     // [N,C]
  Tensor proj;                     // [N,C] attention output projection
  Tensor res1;                     // [N,C] sequential residual only
  Tensor ln2, ln2_mean, ln2_rstd;  // [N,C], [N], [N]
  Tensor fc, act;                  // [N,F] before and after GeLU (act may be fc: GeLU in place)
  Tensor mlp;                      // [N,C]
  Tensor lse;                      // [B,nh,T] f32 attention statistics (training only)
  // Fresh buffers for N = batch * seq rows; act is fc itself when
  // gelu_in_place; lse only when with_lse.
  static BlockBuffers make(Backend* backend, const ModelConfig& cfg, std::int64_t batch, std::int64_t seq, DType dtype,
                           bool gelu_in_place, bool with_lse);
  std::size_t bytes() const;
};

// One block's key/value cache for generation: [B, n_head, max_T, head_size]
// each, filled by the attention_decode kernel.
struct KVCache {
  Tensor k, v;
};

// Standard deviation of GPT-NeoX's init methods: normal (init_method_std),
// small_init (sqrt(2 / (5 C))), wang_init (2 / (L sqrt(C))).
double init_std(const ModelConfig& cfg, const std::string& method);

// y = x W^T + b for x [N, in], W [out, in] (Hugging Face Linear layout).
void linear_forward(Kernels& k, Tensor& y, const Tensor& x, const Tensor& w, const Tensor& b);
// Accumulates dW, db; writes dx when defined.
void linear_backward(Kernels& k, Tensor& dx, Tensor& dw, Tensor& db, const Tensor& dy, const Tensor& x,
                     const Tensor& w);

// in: token ids i32 [N]; out: [N, C]. Adds learned positions when configured.
class EmbeddingLayer {
 public:
  explicit EmbeddingLayer(const ModelConfig& cfg) : cfg_(cfg) {}
  void declare(ParameterArena& arena);
  void forward(const LayerContext& ctx, const Tensor& ids, Tensor& out);
  // Accumulates the tables' gradients (token ids have none).
  void backward(const LayerContext& ctx, const Tensor& dout);
  int table_index() const { return wte_; }
  // Inference: forward() without keeping anything for backward (positions
  // start at ctx.position_offset, as in forward()).
  void forward_cached(const LayerContext& ctx, const Tensor& ids, Tensor& out) const;

 private:
  // The forward pass; `positions` receives the learned positions' ids.
  void run(const LayerContext& ctx, const Tensor& ids, Tensor& out, Tensor& positions) const;
  const ModelConfig& cfg_;
  ParameterArena* arena_ = nullptr;
  int wte_ = -1, wpe_ = -1;
  Tensor ids_;        // the last forward's ids (borrowed)
  Tensor positions_;  // i32 [N] on the device, for learned positions
};

// One GPT-NeoX layer: [N, C] -> [N, C].
class TransformerLayer {
 public:
  TransformerLayer(const ModelConfig& cfg, int index, BlockScratch* scratch)
      : cfg_(cfg), index_(index), scratch_(scratch) {}
  void declare(ParameterArena& arena);
  // forward() writes, and backward() reads, the buffers bound last (the
  // model binds one set per block, or per block of a checkpointed chunk).
  void bind(BlockBuffers* buffers) { acts_ = buffers; }
  void forward(const LayerContext& ctx, const Tensor& in, Tensor& out);
  void backward(const LayerContext& ctx, const Tensor& dout, Tensor& din);
  // Inference: the forward of ctx.seq new tokens per sequence at positions
  // ctx.position_offset.., whose attention (attention_decode) appends their
  // keys and values to `kv` and attends to every earlier position there.
  // Writes only `bufs` (sized for the batch), never the activations training
  // keeps, so it may run between a forward and its backward.
  void forward_cached(const LayerContext& ctx, const Tensor& in, Tensor& out, KVCache& kv, BlockBuffers& bufs) const;

 private:
  // The block's forward into `b`; attend(attn3, qkv3) is the attention
  // ([B,T,C] from [B,T,3C] after rotary). Training and inference share it.
  template <typename Attend>
  void run(const LayerContext& ctx, const Tensor& in, Tensor& out, BlockBuffers& b, Attend&& attend) const;
  const ModelConfig& cfg_;
  int index_;
  BlockScratch* scratch_;
  ParameterArena* arena_ = nullptr;
  int ln1_w_ = -1, ln1_b_ = -1, qkv_w_ = -1, qkv_b_ = -1, dense_w_ = -1, dense_b_ = -1;
  int ln2_w_ = -1, ln2_b_ = -1, fc1_w_ = -1, fc1_b_ = -1, fc2_w_ = -1, fc2_b_ = -1;
  // Saved for backward.
  Tensor in_;                     // the input (borrowed view of the residual stream)
  BlockBuffers* acts_ = nullptr;  // bound by the model
};

// Final LayerNorm and unembedding: [N, C] -> logits [N, V].
class OutputLayer {
 public:
  OutputLayer(const ModelConfig& cfg, const EmbeddingLayer* tied) : cfg_(cfg), tied_(tied) {}
  void declare(ParameterArena& arena);
  void forward(const LayerContext& ctx, const Tensor& in, Tensor& logits);
  void backward(const LayerContext& ctx, const Tensor& dlogits, Tensor& din);
  // Inference: forward() into the given buffers ([N,C], [N], [N]), keeping
  // nothing for backward.
  void forward_cached(const LayerContext& ctx, const Tensor& in, Tensor& logits, Tensor& ln, Tensor& mean,
                      Tensor& rstd) const;

 private:
  const ModelConfig& cfg_;
  const EmbeddingLayer* tied_;
  ParameterArena* arena_ = nullptr;
  int ln_w_ = -1, ln_b_ = -1, out_w_ = -1;
  std::int64_t rows_ = -1;
  Tensor in_, ln_, mean_, rstd_;
};

}  // namespace neox::layers
