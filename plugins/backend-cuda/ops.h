// SPDX-License-Identifier: Apache-2.0
// The cuda backend's implementation of every operation in neox::Kernels: one
// function per op with the op's name and the table's signature preceded by
// the Context (see neox/kernels.h for the contracts). Each checks its
// arguments (neox/kernel_contract.h) and queues kernels on the context's stream.
#pragma once

#include <cstdint>

#include "context.h"
#include "neox/kernels.h"
#include "neox/tensor.h"

namespace neox::cuda {

// matmul.cpp
void matmul(Context& ctx, Tensor& c, const Tensor& a, const Tensor& b, bool trans_a, bool trans_b, float alpha,
            float beta);
// ops.cpp
void add_bias(Context& ctx, Tensor& out, const Tensor& bias);
void bias_backward(Context& ctx, Tensor& dbias, const Tensor& dout);
void layernorm_forward(Context& ctx, Tensor& out, Tensor& mean, Tensor& rstd, const Tensor& inp, const Tensor& weight,
                       const Tensor& bias, float eps);
void layernorm_backward(Context& ctx, Tensor& dinp, Tensor& dweight, Tensor& dbias, const Tensor& dout,
                        const Tensor& inp, const Tensor& weight, const Tensor& mean, const Tensor& rstd);
void gelu_forward(Context& ctx, Tensor& out, const Tensor& inp);
void gelu_backward(Context& ctx, Tensor& dinp, const Tensor& inp, const Tensor& dout);
void cross_entropy_forward(Context& ctx, Tensor& losses, Tensor& lse, const Tensor& logits, const Tensor& targets);
void cross_entropy_backward(Context& ctx, Tensor& dlogits, const Tensor& logits, const Tensor& lse,
                            const Tensor& targets, float dloss);
void embedding_forward(Context& ctx, Tensor& out, const Tensor& ids, const Tensor& table, bool accumulate);
void embedding_backward(Context& ctx, Tensor& dtable, const Tensor& ids, const Tensor& dout);
void add(Context& ctx, Tensor& out, const Tensor& a, const Tensor& b);
void axpby(Context& ctx, Tensor& y, const Tensor& x, float alpha, float beta);
void fill(Context& ctx, Tensor& t, float value);
void convert(Context& ctx, Tensor& out, const Tensor& in);
double sum_squares(Context& ctx, const Tensor& x);
double sum(Context& ctx, const Tensor& x);
void adamw_update(Context& ctx, Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWParams& p);
// rotary.cpp
void rotary_forward(Context& ctx, Tensor& qkv, int n_head, int rotary_dims, float base, std::int64_t position_offset);
void rotary_backward(Context& ctx, Tensor& dqkv, int n_head, int rotary_dims, float base, std::int64_t position_offset);
// attention_ops.cpp (the kernels are attention.cu's)
void attention_forward(Context& ctx, Tensor& out, Tensor& lse, const Tensor& qkv, int n_head);
void attention_backward(Context& ctx, Tensor& dqkv, const Tensor& dout, const Tensor& qkv, const Tensor& out,
                        const Tensor& lse, int n_head);
void attention_decode(Context& ctx, Tensor& out, Tensor& k_cache, Tensor& v_cache, const Tensor& qkv, int n_head,
                      std::int64_t position_offset);

}  // namespace neox::cuda
