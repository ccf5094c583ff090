// SPDX-License-Identifier: Apache-2.0
#include "layers.h"
#include "neox/arena.h"

namespace neox::layers {

void OutputLayer::declare(ParameterArena& arena) {
  arena_ = &arena;
  const std::int64_t C = cfg_.hidden_size;
  ln_w_ = arena.add({"gpt_neox.final_layer_norm.weight", {C}, false, InitKind::ones});
  ln_b_ = arena.add({"gpt_neox.final_layer_norm.bias", {C}, false, InitKind::zeros});
  if (cfg_.no_weight_tying)
    out_w_ = arena.add({"embed_out.weight",
                        {cfg_.padded_vocab_size(), C},
                        true,
                        InitKind::normal,
                        static_cast<float>(init_std(cfg_, cfg_.init_method))});
}

void OutputLayer::forward(const LayerContext& ctx, const Tensor& in, Tensor& logits) {
  const std::int64_t N = ctx.batch * ctx.seq, C = cfg_.hidden_size;
  if (N != rows_) {
    ln_ = Tensor::empty(ctx.backend, {N, C}, arena_->compute_dtype());
    mean_ = Tensor::empty(ctx.backend, {N}, DType::f32);
    rstd_ = Tensor::empty(ctx.backend, {N}, DType::f32);
    rows_ = N;
  }
  in_ = in;
  forward_cached(ctx, in, logits, ln_, mean_, rstd_);
}

void OutputLayer::forward_cached(const LayerContext& ctx, const Tensor& in, Tensor& logits, Tensor& ln, Tensor& mean,
                                 Tensor& rstd) const {
  Kernels& k = ctx.backend->kernels;
  k.layernorm_forward(ln, mean, rstd, in, arena_->weight(ln_w_), arena_->weight(ln_b_),
                      static_cast<float>(cfg_.layernorm_epsilon));
  const int w = out_w_ >= 0 ? out_w_ : tied_->table_index();
  k.matmul(logits, ln, arena_->weight(w), false, true, 1.0f, 0.0f);  // [N,V] = [N,C] @ [V,C]^T
}

void OutputLayer::backward(const LayerContext& ctx, const Tensor& dlogits, Tensor& din) {
  Kernels& k = ctx.backend->kernels;
  const int w = out_w_ >= 0 ? out_w_ : tied_->table_index();
  Tensor dw = arena_->grad(w);
  k.matmul(dw, dlogits, ln_, true, false, 1.0f, 1.0f);  // [V,C] += [N,V]^T @ [N,C]
  Tensor& dln = ln_;                                    // the normalised input is no longer needed: reuse it
  k.matmul(dln, dlogits, arena_->weight(w), false, false, 1.0f, 0.0f);  // [N,C] = [N,V] @ [V,C]
  k.fill(din, 0.0f);
  Tensor dlw = arena_->grad(ln_w_), dlb = arena_->grad(ln_b_);
  k.layernorm_backward(din, dlw, dlb, dln, in_, arena_->weight(ln_w_), mean_, rstd_);
}

}  // namespace neox::layers
