// SPDX-License-Identifier: Apache-2.0
// One GPT-NeoX layer, as in Hugging Face's GPTNeoXLayer:
//   parallel (gpt_j_residual):  out = x + attn(ln1(x)) + mlp(ln2(x))
//   sequential:                 h = x + attn(ln1(x)); out = h + mlp(ln2(h))
// attn(z) = dense(attention(rotary(query_key_value(z)))), mlp(z) =
// dense_4h_to_h(gelu(dense_h_to_4h(z))).
#include "layers.h"
#include "neox/arena.h"

namespace neox::layers {

void TransformerLayer::declare(ParameterArena& arena) {
  arena_ = &arena;
  const std::int64_t C = cfg_.hidden_size, F = cfg_.ffn_size();
  const float in_std = static_cast<float>(init_std(cfg_, cfg_.init_method));
  const float out_std = static_cast<float>(init_std(cfg_, cfg_.output_layer_init_method));
  const std::string p = "gpt_neox.layers." + std::to_string(index_) + ".";
  auto norm = [&](const std::string& n, int& w, int& b) {
    w = arena.add({p + n + ".weight", {C}, false, InitKind::ones});
    b = arena.add({p + n + ".bias", {C}, false, InitKind::zeros});
  };
  auto linear = [&](const std::string& n, std::int64_t out, std::int64_t in, float std, int& w, int& b) {
    w = arena.add({p + n + ".weight", {out, in}, true, InitKind::normal, std});
    b = arena.add({p + n + ".bias", {out}, false, InitKind::zeros});
  };
  norm("input_layernorm", ln1_w_, ln1_b_);
  linear("attention.query_key_value", 3 * C, C, in_std, qkv_w_, qkv_b_);
  linear("attention.dense", C, C, out_std, dense_w_, dense_b_);
  norm("post_attention_layernorm", ln2_w_, ln2_b_);
  linear("mlp.dense_h_to_4h", F, C, in_std, fc1_w_, fc1_b_);
  linear("mlp.dense_4h_to_h", C, F, out_std, fc2_w_, fc2_b_);
}

BlockBuffers BlockBuffers::make(Backend* backend, const ModelConfig& cfg, std::int64_t batch, std::int64_t seq,
                                DType dtype, bool gelu_in_place, bool with_lse) {
  const std::int64_t N = batch * seq, C = cfg.hidden_size, F = cfg.ffn_size();
  auto act = [&](Shape s) { return Tensor::empty(backend, std::move(s), dtype); };
  auto stat = [&](Shape s) { return Tensor::empty(backend, std::move(s), DType::f32); };
  BlockBuffers b;
  b.ln1 = act({N, C});
  b.ln1_mean = stat({N});
  b.ln1_rstd = stat({N});
  b.qkv = act({N, 3 * C});
  b.attn = act({N, C});
  b.proj = act({N, C});
  b.res1 = cfg.gpt_j_residual ? Tensor() : act({N, C});
  b.ln2 = act({N, C});
  b.ln2_mean = stat({N});
  b.ln2_rstd = stat({N});
  b.fc = act({N, F});
  b.act = gelu_in_place ? b.fc : act({N, F});
  b.mlp = act({N, C});
  if (with_lse) b.lse = stat({batch, cfg.num_attention_heads, seq});
  return b;
}

std::size_t BlockBuffers::bytes() const {
  std::size_t n = 0;
  for (const Tensor* t :
       {&ln1, &ln1_mean, &ln1_rstd, &qkv, &attn, &proj, &res1, &ln2, &ln2_mean, &ln2_rstd, &fc, &mlp, &lse})
    if (t->defined()) n += t->bytes();
  if (act.defined() && act.data() != fc.data()) n += act.bytes();
  return n;
}

template <typename Attend>
void TransformerLayer::run(const LayerContext& ctx, const Tensor& in, Tensor& out, BlockBuffers& b,
                           Attend&& attend) const {
  Kernels& k = ctx.backend->kernels;
  const ParameterArena& a = *arena_;
  const int H = static_cast<int>(cfg_.num_attention_heads);
  const float eps = static_cast<float>(cfg_.layernorm_epsilon);

  // Attention branch.
  k.layernorm_forward(b.ln1, b.ln1_mean, b.ln1_rstd, in, a.weight(ln1_w_), a.weight(ln1_b_), eps);
  linear_forward(k, b.qkv, b.ln1, a.weight(qkv_w_), a.weight(qkv_b_));
  Tensor qkv3 = b.qkv.view({ctx.batch, ctx.seq, 3 * cfg_.hidden_size});
  if (cfg_.rotary_dims() > 0)
    k.rotary_forward(qkv3, H, cfg_.rotary_dims(), static_cast<float>(cfg_.rotary_emb_base), ctx.position_offset);
  Tensor attn3 = b.attn.view({ctx.batch, ctx.seq, cfg_.hidden_size});
  attend(attn3, qkv3);
  linear_forward(k, b.proj, b.attn, a.weight(dense_w_), a.weight(dense_b_));

  // MLP branch: on ln2(x) (parallel) or ln2(x + attn) (sequential).
  const Tensor* mlp_in = &in;
  if (!cfg_.gpt_j_residual) {
    k.add(b.res1, in, b.proj);
    mlp_in = &b.res1;
  }
  k.layernorm_forward(b.ln2, b.ln2_mean, b.ln2_rstd, *mlp_in, a.weight(ln2_w_), a.weight(ln2_b_), eps);
  linear_forward(k, b.fc, b.ln2, a.weight(fc1_w_), a.weight(fc1_b_));
  k.gelu_forward(b.act, b.fc);
  linear_forward(k, b.mlp, b.act, a.weight(fc2_w_), a.weight(fc2_b_));

  if (cfg_.gpt_j_residual) {
    k.add(out, in, b.proj);
    k.add(out, out, b.mlp);
  } else {
    k.add(out, b.res1, b.mlp);
  }
}

void TransformerLayer::forward(const LayerContext& ctx, const Tensor& in, Tensor& out) {
  if (!acts_ || acts_->qkv.dim(0) != ctx.batch * ctx.seq || !acts_->lse.defined() || acts_->lse.dim(2) != ctx.seq)
    throw Error("layers." + std::to_string(index_) + ": forward without buffers bound for a [" +
                std::to_string(ctx.batch) + ", " + std::to_string(ctx.seq) + "] batch");
  in_ = in;
  Kernels& k = ctx.backend->kernels;
  const int H = static_cast<int>(cfg_.num_attention_heads);
  BlockBuffers& b = *acts_;
  run(ctx, in, out, b, [&](Tensor& attn3, const Tensor& qkv3) { k.attention_forward(attn3, b.lse, qkv3, H); });
}

void TransformerLayer::forward_cached(const LayerContext& ctx, const Tensor& in, Tensor& out, KVCache& kv,
                                      BlockBuffers& bufs) const {
  Kernels& k = ctx.backend->kernels;
  const int H = static_cast<int>(cfg_.num_attention_heads);
  run(ctx, in, out, bufs,
      [&](Tensor& attn3, const Tensor& qkv3) { k.attention_decode(attn3, kv.k, kv.v, qkv3, H, ctx.position_offset); });
}

void TransformerLayer::backward(const LayerContext& ctx, const Tensor& dout, Tensor& din) {
  Kernels& k = ctx.backend->kernels;
  const ParameterArena& a = *arena_;
  BlockScratch& s = *scratch_;
  const BlockBuffers& acts = *acts_;
  const int H = static_cast<int>(cfg_.num_attention_heads);
  auto grad = [&](int i) { return a.grad(i); };

  // MLP branch. Its input's gradient goes to d_mlp_in: din itself (parallel)
  // or the gradient of the sequential residual h.
  Tensor& d_mlp_in = cfg_.gpt_j_residual ? din : s.d_res;
  k.axpby(d_mlp_in, dout, 1.0f, 0.0f);  // the residual path
  {
    Tensor dw2 = grad(fc2_w_), db2 = grad(fc2_b_), dw1 = grad(fc1_w_), db1 = grad(fc1_b_);
    linear_backward(k, s.d_fc, dw2, db2, dout, acts.act, a.weight(fc2_w_));
    k.gelu_backward(s.d_fc, acts.fc, s.d_fc);
    linear_backward(k, s.d_ln, dw1, db1, s.d_fc, acts.ln2, a.weight(fc1_w_));
    Tensor dlw = grad(ln2_w_), dlb = grad(ln2_b_);
    const Tensor& mlp_in = cfg_.gpt_j_residual ? in_ : acts.res1;
    k.layernorm_backward(d_mlp_in, dlw, dlb, s.d_ln, mlp_in, a.weight(ln2_w_), acts.ln2_mean, acts.ln2_rstd);
  }

  // Attention branch: its output gradient is dout (parallel) or d h.
  const Tensor& d_attn_out = cfg_.gpt_j_residual ? dout : s.d_res;
  if (!cfg_.gpt_j_residual) k.axpby(din, s.d_res, 1.0f, 0.0f);
  {
    Tensor dwo = grad(dense_w_), dbo = grad(dense_b_);
    linear_backward(k, s.d_attn, dwo, dbo, d_attn_out, acts.attn, a.weight(dense_w_));
    Tensor dqkv3 = s.d_qkv.view({ctx.batch, ctx.seq, 3 * cfg_.hidden_size});
    Tensor dattn3 = s.d_attn.view({ctx.batch, ctx.seq, cfg_.hidden_size});
    Tensor attn3 = acts.attn.view({ctx.batch, ctx.seq, cfg_.hidden_size});
    Tensor qkv3 = acts.qkv.view({ctx.batch, ctx.seq, 3 * cfg_.hidden_size});
    k.attention_backward(dqkv3, dattn3, qkv3, attn3, acts.lse, H);
    if (cfg_.rotary_dims() > 0)
      k.rotary_backward(dqkv3, H, cfg_.rotary_dims(), static_cast<float>(cfg_.rotary_emb_base), ctx.position_offset);
    Tensor dwqkv = grad(qkv_w_), dbqkv = grad(qkv_b_);
    linear_backward(k, s.d_ln, dwqkv, dbqkv, s.d_qkv, acts.ln1, a.weight(qkv_w_));
    Tensor dlw = grad(ln1_w_), dlb = grad(ln1_b_);
    k.layernorm_backward(din, dlw, dlb, s.d_ln, in_, a.weight(ln1_w_), acts.ln1_mean, acts.ln1_rstd);
  }
}

}  // namespace neox::layers
