// SPDX-License-Identifier: Apache-2.0
#include <vector>

#include "layers.h"
#include "neox/arena.h"

namespace neox::layers {

void EmbeddingLayer::declare(ParameterArena& arena) {
  arena_ = &arena;
  const float std = static_cast<float>(init_std(cfg_, cfg_.init_method));
  wte_ = arena.add(
      {"gpt_neox.embed_in.weight", {cfg_.padded_vocab_size(), cfg_.hidden_size}, true, InitKind::normal, std});
  if (cfg_.pos_emb == "learned")
    wpe_ = arena.add(
        {"gpt_neox.embed_pos.weight", {cfg_.max_position_embeddings, cfg_.hidden_size}, true, InitKind::normal, std});
}

void EmbeddingLayer::run(const LayerContext& ctx, const Tensor& ids, Tensor& out, Tensor& positions) const {
  Kernels& k = ctx.backend->kernels;
  k.embedding_forward(out, ids, arena_->weight(wte_), false);
  if (wpe_ >= 0) {
    const std::int64_t N = ctx.batch * ctx.seq;
    if (ctx.position_offset + ctx.seq > cfg_.max_position_embeddings)
      throw Error("embedding: positions up to " + std::to_string(ctx.position_offset + ctx.seq) +
                  " exceed max_position_embeddings " + std::to_string(cfg_.max_position_embeddings));
    std::vector<std::int32_t> pos(static_cast<std::size_t>(N));
    for (std::int64_t i = 0; i < N; ++i)
      pos[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(ctx.position_offset + i % ctx.seq);
    positions = ctx.backend->to_device(Tensor::wrap(pos.data(), {N}, DType::i32));
    k.embedding_forward(out, positions, arena_->weight(wpe_), true);
  }
}

void EmbeddingLayer::forward(const LayerContext& ctx, const Tensor& ids, Tensor& out) {
  ids_ = ids;
  run(ctx, ids, out, positions_);
}

void EmbeddingLayer::forward_cached(const LayerContext& ctx, const Tensor& ids, Tensor& out) const {
  Tensor positions;
  run(ctx, ids, out, positions);
}

void EmbeddingLayer::backward(const LayerContext& ctx, const Tensor& dout) {
  Kernels& k = ctx.backend->kernels;
  Tensor dwte = arena_->grad(wte_);
  k.embedding_backward(dwte, ids_, dout);
  if (wpe_ >= 0) {
    Tensor dwpe = arena_->grad(wpe_);
    k.embedding_backward(dwpe, positions_, dout);
  }
}

}  // namespace neox::layers
