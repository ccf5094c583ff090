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

void TransformerLayer::ensure(const LayerContext& ctx) {
  const std::int64_t N = ctx.batch * ctx.seq;
  if (N == rows_ && lse_.defined() && lse_.dim(2) == ctx.seq) return;
  Backend* be = ctx.backend;
  const std::int64_t C = cfg_.hidden_size, F = cfg_.ffn_size(), H = cfg_.num_attention_heads;
  auto make = [&](Shape s) { return Tensor::empty(be, std::move(s), DType::f32); };
  ln1_ = make({N, C});
  ln1_mean_ = make({N});
  ln1_rstd_ = make({N});
  qkv_ = make({N, 3 * C});
  attn_ = make({N, C});
  lse_ = make({ctx.batch, H, ctx.seq});
  proj_ = make({N, C});
  res1_ = cfg_.gpt_j_residual ? Tensor() : make({N, C});
  ln2_ = make({N, C});
  ln2_mean_ = make({N});
  ln2_rstd_ = make({N});
  fc_ = make({N, F});
  act_ = make({N, F});
  mlp_ = make({N, C});
  rows_ = N;
}

void TransformerLayer::forward(const LayerContext& ctx, const Tensor& in, Tensor& out) {
  ensure(ctx);
  Kernels& k = ctx.backend->kernels;
  const ParameterArena& a = *arena_;
  const int H = static_cast<int>(cfg_.num_attention_heads);
  const float eps = static_cast<float>(cfg_.layernorm_epsilon);
  in_ = in;

  // Attention branch.
  k.layernorm_forward(ln1_, ln1_mean_, ln1_rstd_, in, a.param(ln1_w_), a.param(ln1_b_), eps);
  linear_forward(k, qkv_, ln1_, a.param(qkv_w_), a.param(qkv_b_));
  Tensor qkv3 = qkv_.view({ctx.batch, ctx.seq, 3 * cfg_.hidden_size});
  if (cfg_.rotary_dims() > 0)
    k.rotary_forward(qkv3, H, cfg_.rotary_dims(), static_cast<float>(cfg_.rotary_emb_base),
                     ctx.position_offset);
  Tensor attn3 = attn_.view({ctx.batch, ctx.seq, cfg_.hidden_size});
  k.attention_forward(attn3, lse_, qkv3, H);
  linear_forward(k, proj_, attn_, a.param(dense_w_), a.param(dense_b_));

  // MLP branch: on ln2(x) (parallel) or ln2(x + attn) (sequential).
  const Tensor* mlp_in = &in;
  if (!cfg_.gpt_j_residual) {
    k.add(res1_, in, proj_);
    mlp_in = &res1_;
  }
  k.layernorm_forward(ln2_, ln2_mean_, ln2_rstd_, *mlp_in, a.param(ln2_w_), a.param(ln2_b_), eps);
  linear_forward(k, fc_, ln2_, a.param(fc1_w_), a.param(fc1_b_));
  k.gelu_forward(act_, fc_);
  linear_forward(k, mlp_, act_, a.param(fc2_w_), a.param(fc2_b_));

  if (cfg_.gpt_j_residual) {
    k.add(out, in, proj_);
    k.add(out, out, mlp_);
  } else {
    k.add(out, res1_, mlp_);
  }
}

void TransformerLayer::backward(const LayerContext& ctx, const Tensor& dout, Tensor& din) {
  Kernels& k = ctx.backend->kernels;
  const ParameterArena& a = *arena_;
  BlockScratch& s = *scratch_;
  const int H = static_cast<int>(cfg_.num_attention_heads);
  auto grad = [&](int i) { return a.grad(i); };

  // MLP branch. Its input's gradient goes to d_mlp_in: din itself (parallel)
  // or the gradient of the sequential residual h.
  Tensor& d_mlp_in = cfg_.gpt_j_residual ? din : s.d_res;
  k.axpby(d_mlp_in, dout, 1.0f, 0.0f);  // the residual path
  {
    Tensor dw2 = grad(fc2_w_), db2 = grad(fc2_b_), dw1 = grad(fc1_w_), db1 = grad(fc1_b_);
    linear_backward(k, s.d_fc, dw2, db2, dout, act_, a.param(fc2_w_));
    k.gelu_backward(s.d_fc, fc_, s.d_fc);
    linear_backward(k, s.d_ln, dw1, db1, s.d_fc, ln2_, a.param(fc1_w_));
    Tensor dlw = grad(ln2_w_), dlb = grad(ln2_b_);
    const Tensor& mlp_in = cfg_.gpt_j_residual ? in_ : res1_;
    k.layernorm_backward(d_mlp_in, dlw, dlb, s.d_ln, mlp_in, a.param(ln2_w_), ln2_mean_, ln2_rstd_);
  }

  // Attention branch: its output gradient is dout (parallel) or d h.
  const Tensor& d_attn_out = cfg_.gpt_j_residual ? dout : s.d_res;
  if (!cfg_.gpt_j_residual) k.axpby(din, s.d_res, 1.0f, 0.0f);
  {
    Tensor dwo = grad(dense_w_), dbo = grad(dense_b_);
    linear_backward(k, s.d_attn, dwo, dbo, d_attn_out, attn_, a.param(dense_w_));
    Tensor dqkv3 = s.d_qkv.view({ctx.batch, ctx.seq, 3 * cfg_.hidden_size});
    Tensor dattn3 = s.d_attn.view({ctx.batch, ctx.seq, cfg_.hidden_size});
    Tensor attn3 = attn_.view({ctx.batch, ctx.seq, cfg_.hidden_size});
    Tensor qkv3 = qkv_.view({ctx.batch, ctx.seq, 3 * cfg_.hidden_size});
    k.attention_backward(dqkv3, dattn3, qkv3, attn3, lse_, H);
    if (cfg_.rotary_dims() > 0)
      k.rotary_backward(dqkv3, H, cfg_.rotary_dims(), static_cast<float>(cfg_.rotary_emb_base),
                        ctx.position_offset);
    Tensor dwqkv = grad(qkv_w_), dbqkv = grad(qkv_b_);
    linear_backward(k, s.d_ln, dwqkv, dbqkv, s.d_qkv, ln1_, a.param(qkv_w_));
    Tensor dlw = grad(ln1_w_), dlb = grad(ln1_b_);
    k.layernorm_backward(din, dlw, dlb, s.d_ln, in_, a.param(ln1_w_), ln1_mean_, ln1_rstd_);
  }
}

}  // namespace neox::layers
