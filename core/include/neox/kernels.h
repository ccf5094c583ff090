// SPDX-License-Identifier: Apache-2.0
// The kernel set: every operation the GPT-NeoX model and the optimizers need.
//
// A Backend fills a Kernels table with its implementation of each operation.
// A `kernels` plugin may fill only some entries; the manifest's
// [plugins.kernels] table then swaps those entries into the backend's table
// (op name = plugin name), which is how A/B kernel benchmarks are wired.
//
// Conventions for every operation:
//  * Tensors are contiguous and live on the backend's device. Token ids and
//    targets are i32.
//  * Precision. Every backend accepts three activation dtypes, f32, bf16
//    and f16 (the "compute dtype"); within one call all activation tensors
//    share it. The roles:
//      - activations, and the parameters a forward reads (weights, biases,
//        LayerNorm parameters, embedding tables: the model passes its
//        compute-dtype copy): the compute dtype;
//      - parameter gradients (matmul's c when it computes a weight gradient,
//        bias_backward's dbias, layernorm_backward's dweight and dbias,
//        embedding_backward's dtable): f32 always, whatever the compute
//        dtype, so that accumulation over micro-batches stays in f32;
//      - per-row statistics (mean, rstd, lse, losses): f32 always;
//      - add, axpby, fill, convert, sum, sum_squares: any of the three float
//        dtypes (add and axpby: all operands alike);
//      - adamw_update: f32 (master weights and optimizer state).
//    Arithmetic is f32 or better inside every kernel; only storage is in the
//    compute dtype (results are rounded once, when written).
//  * A tensor of rank > 2 used as a matrix is [prod(leading dims), last dim].
//  * "writes" means the output is overwritten; "accumulates" means the result
//    is added to what is there (parameter gradients always accumulate).
//  * Shapes are checked; a mismatch throws neox::Error naming the operation.
//    Per-row statistics (mean, rstd, lse, losses) are checked by element
//    count, matrices by their [rows, cols] view.
//  * Outputs must not overlap inputs, except the aliases an op allows.
//  * Operations run in order on the backend's stream; reductions that return
//    a host value synchronise.
#pragma once

#include <cstdint>
#include <functional>
#include <string_view>
#include <vector>

#include "neox/export.h"
#include "neox/tensor.h"

namespace neox {

// X-macro list of operations: X(name). The name is the key used in the
// manifest's [plugins.kernels] table and by `neox bench op`.
#define NEOX_KERNEL_OPS(X)  \
  X(matmul)                 \
  X(add_bias)               \
  X(bias_backward)          \
  X(layernorm_forward)      \
  X(layernorm_backward)     \
  X(gelu_forward)           \
  X(gelu_backward)          \
  X(rotary_forward)         \
  X(rotary_backward)        \
  X(attention_forward)      \
  X(attention_backward)     \
  X(attention_decode)       \
  X(cross_entropy_forward)  \
  X(cross_entropy_backward) \
  X(embedding_forward)      \
  X(embedding_backward)     \
  X(add)                    \
  X(axpby)                  \
  X(fill)                   \
  X(convert)                \
  X(sum_squares)            \
  X(sum)                    \
  X(adamw_update)

struct AdamWParams {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
  std::int64_t step = 1;    // 1-based step number, for bias correction
  float grad_scale = 1.0f;  // gradients are multiplied by this first (clipping, loss scale)
};

struct Kernels {
  // c[M,N] = alpha * op(a) @ op(b) + beta * c, op(x) = x or x^T.
  // a is [M,K] ([K,M] if trans_a); b is [K,N] ([N,K] if trans_b).
  // beta = 0 ignores what c held (NaNs included); beta = 1 accumulates.
  // a and b share a dtype; c has that dtype or f32 (weight gradients).
  std::function<void(Tensor& c, const Tensor& a, const Tensor& b, bool trans_a, bool trans_b, float alpha, float beta)>
      matmul;
  // out[N,C] += bias[C] (broadcast over rows).
  std::function<void(Tensor& out, const Tensor& bias)> add_bias;
  // dbias[C] accumulates the column sums of dout[N,C].
  std::function<void(Tensor& dbias, const Tensor& dout)> bias_backward;

  // out[N,C] = (inp - mean) * rstd * weight + bias; writes mean[N], rstd[N].
  std::function<void(Tensor& out, Tensor& mean, Tensor& rstd, const Tensor& inp, const Tensor& weight,
                     const Tensor& bias, float eps)>
      layernorm_forward;
  // Accumulates dinp[N,C], dweight[C], dbias[C] from dout[N,C] and the saved
  // mean and rstd of the forward pass.
  std::function<void(Tensor& dinp, Tensor& dweight, Tensor& dbias, const Tensor& dout, const Tensor& inp,
                     const Tensor& weight, const Tensor& mean, const Tensor& rstd)>
      layernorm_backward;

  // Exact (erf) GeLU: out = x * 0.5 * (1 + erf(x / sqrt(2))). out may alias inp.
  std::function<void(Tensor& out, const Tensor& inp)> gelu_forward;
  // Writes dinp = gelu'(inp) * dout. dinp may alias dout.
  std::function<void(Tensor& dinp, const Tensor& inp, const Tensor& dout)> gelu_backward;

  // In place on the q and k parts of qkv[B,T,3*C] (q at columns [0,C), k at
  // [C,2C), v at [2C,3C); head h of q at [h*hs, (h+1)*hs)). Rotates the first
  // rotary_dims of each head with GPT-NeoX's rotate-half pairing (element i
  // with i + rotary_dims/2), angle (position_offset + t) * inv_freq[i], where
  // inv_freq[i] = 1 / base^(2i/rotary_dims) rounded to float32 as Hugging
  // Face and GPT-NeoX compute it. rotary_dims is even and at most the head size.
  // rotary_backward applies the inverse rotation (to dq and dk in dqkv).
  std::function<void(Tensor& qkv, int n_head, int rotary_dims, float base, std::int64_t position_offset)>
      rotary_forward;
  std::function<void(Tensor& dqkv, int n_head, int rotary_dims, float base, std::int64_t position_offset)>
      rotary_backward;

  // Causal softmax attention with scale 1/sqrt(hs): out[B,T,C] from
  // qkv[B,T,3*C] (layout as for rotary). Writes lse[B,n_head,T], the
  // log-sum-exp of each row of scaled scores, for the backward pass.
  std::function<void(Tensor& out, Tensor& lse, const Tensor& qkv, int n_head)> attention_forward;
  // Writes dqkv[B,T,3*C] from dout[B,T,C] and the forward's qkv, out, lse.
  std::function<void(Tensor& dqkv, const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse,
                     int n_head)>
      attention_backward;
  // Incremental causal attention for generation, with a key/value cache.
  // qkv[B,Tq,3*C] (layout as for rotary, rotary already applied) holds Tq new
  // tokens at positions [position_offset, position_offset + Tq). Writes their
  // k and v into k_cache and v_cache [B, n_head, max_T, hs] at those
  // positions, then writes out[B,Tq,C]: query i attends, scale 1/sqrt(hs), to
  // the cache positions [0, position_offset + i], where positions below
  // position_offset hold what earlier calls wrote. Throws when
  // position_offset + Tq > max_T or position_offset < 0. Running a sequence
  // in chunks gives attention_forward's out for the whole sequence. No lse:
  // there is no backward.
  std::function<void(Tensor& out, Tensor& k_cache, Tensor& v_cache, const Tensor& qkv, int n_head,
                     std::int64_t position_offset)>
      attention_decode;

  // losses[N] = logsumexp(logits[N,V]) - logits[target]; writes lse[N].
  // Rows whose target is negative (ignored positions) get loss 0.
  // A target >= V throws neox::Error naming the row.
  std::function<void(Tensor& losses, Tensor& lse, const Tensor& logits, const Tensor& targets)> cross_entropy_forward;
  // Writes dlogits[N,V] = (softmax(logits) - onehot(target)) * dloss, and 0 in
  // ignored rows. dlogits may alias logits (in-place, saves V*N floats).
  std::function<void(Tensor& dlogits, const Tensor& logits, const Tensor& lse, const Tensor& targets, float dloss)>
      cross_entropy_backward;

  // out[N,C] = table[ids[N]] (accumulate=false) or += (accumulate=true).
  // An id outside [0,V) throws neox::Error naming the position.
  std::function<void(Tensor& out, const Tensor& ids, const Tensor& table, bool accumulate)> embedding_forward;
  // dtable[V,C] accumulates dout[N,C] into the rows named by ids[N].
  std::function<void(Tensor& dtable, const Tensor& ids, const Tensor& dout)> embedding_backward;

  // out = a + b, elementwise over equal numel. out may alias a or b.
  std::function<void(Tensor& out, const Tensor& a, const Tensor& b)> add;
  // y = alpha * x + beta * y; beta = 0 ignores what y held (a copy when alpha = 1).
  std::function<void(Tensor& y, const Tensor& x, float alpha, float beta)> axpby;
  // t = value (f32, f64, bf16 or f16).
  std::function<void(Tensor& t, float value)> fill;
  // out = in converted to out's dtype (f32, bf16, f16), equal numel.
  std::function<void(Tensor& out, const Tensor& in)> convert;
  // Sum of squares / sum of all elements of an f32, bf16 or f16 tensor,
  // accumulated in double (or in f32 per block and double across blocks). A
  // NaN or infinity in x gives a non-finite result (overflow detection for
  // fp16 loss scaling relies on it).
  std::function<double(const Tensor& x)> sum_squares;
  std::function<double(const Tensor& x)> sum;

  // PyTorch AdamW over one contiguous slice (param, grad, m, v of equal numel):
  //   g = grad * grad_scale; p -= lr * weight_decay * p;
  //   m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
  //   p -= (lr / (1 - b1^step)) * m / (sqrt(v) / sqrt(1 - b2^step) + eps)
  std::function<void(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWParams& p)> adamw_update;
};

// A fingerprint of the table's layout: the operation names in order and
// sizeof(Kernels). Every plugin records the fingerprint it was built with
// (NEOX_PLUGIN) and the registry refuses a plugin whose fingerprint differs,
// so a plugin built against another kernel table cannot call the wrong op.
constexpr std::uint64_t kernel_table_fingerprint() {
#define NEOX_OP_NAME(name) #name ","
  constexpr const char names[] = NEOX_KERNEL_OPS(NEOX_OP_NAME);
#undef NEOX_OP_NAME
  std::uint64_t h = 14695981039346656037ull;  // FNV-1a
  for (char c : names) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  return (h ^ sizeof(Kernels)) * 1099511628211ull;
}

// The rotary embedding's cos and sin, [count, rotary_dims/2, 2] (cos then
// sin) for positions start .. start+count-1: inv_freq rounded to float32 as
// Hugging Face and GPT-NeoX compute it, angles and their cos/sin in double.
// Every backend's rotary kernels use this table, so that they agree.
NEOX_API std::vector<double> rotary_cos_sin_table(std::int64_t start, std::int64_t count, int rotary_dims, float base);

// Names of all operations, in declaration order.
const std::vector<std::string_view>& kernel_op_names();
// True when the named op is set in `k`; throws neox::Error for an unknown name.
bool kernel_op_present(const Kernels& k, std::string_view op);
// dst.op = src.op for the named op; throws neox::Error for an unknown name or
// when src does not provide it.
void kernel_op_copy(Kernels& dst, const Kernels& src, std::string_view op);
// Names of the ops not set in k (a complete backend has none).
std::vector<std::string_view> kernel_ops_missing(const Kernels& k);

}  // namespace neox
