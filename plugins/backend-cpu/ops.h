// SPDX-License-Identifier: Apache-2.0
// The cpu backend's implementation of every operation in neox::Kernels, one
// function per op with the op's name and the table's signature (see
// neox/kernels.h for the contracts). Each checks its arguments with the SDK's
// check of the op (neox/kernel_contract.h) and then runs a plain float kernel
// defined beside it, in the file named after the op.
// They take f32 tensors (and i32 ids); the backend's table reaches them
// through mixed_precision.h, which converts bf16 and f16 tensors to f32 and
// back. fill, convert, sum and sum_squares read and write every float dtype
// themselves.
#pragma once

#include <cstdint>

#include "neox/kernels.h"
#include "neox/tensor.h"

namespace neox::cpu {

// matmul.cpp
void matmul(Tensor& c, const Tensor& a, const Tensor& b, bool trans_a, bool trans_b, float alpha, float beta);
// bias.cpp
void add_bias(Tensor& out, const Tensor& bias);
void bias_backward(Tensor& dbias, const Tensor& dout);
// layernorm.cpp
void layernorm_forward(Tensor& out, Tensor& mean, Tensor& rstd, const Tensor& inp, const Tensor& weight,
                       const Tensor& bias, float eps);
void layernorm_backward(Tensor& dinp, Tensor& dweight, Tensor& dbias, const Tensor& dout, const Tensor& inp,
                        const Tensor& weight, const Tensor& mean, const Tensor& rstd);
// gelu.cpp
void gelu_forward(Tensor& out, const Tensor& inp);
void gelu_backward(Tensor& dinp, const Tensor& inp, const Tensor& dout);
// rotary.cpp
void rotary_forward(Tensor& qkv, int n_head, int rotary_dims, float base, std::int64_t position_offset);
void rotary_backward(Tensor& dqkv, int n_head, int rotary_dims, float base, std::int64_t position_offset);
// attention.cpp
void attention_forward(Tensor& out, Tensor& lse, const Tensor& qkv, int n_head);
void attention_backward(Tensor& dqkv, const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse,
                        int n_head);
void attention_decode(Tensor& out, Tensor& k_cache, Tensor& v_cache, const Tensor& qkv, int n_head,
                      std::int64_t position_offset);
// cross_entropy.cpp
void cross_entropy_forward(Tensor& losses, Tensor& lse, const Tensor& logits, const Tensor& targets);
void cross_entropy_backward(Tensor& dlogits, const Tensor& logits, const Tensor& lse, const Tensor& targets,
                            float dloss);
// embedding.cpp
void embedding_forward(Tensor& out, const Tensor& ids, const Tensor& table, bool accumulate);
void embedding_backward(Tensor& dtable, const Tensor& ids, const Tensor& dout);
// elementwise.cpp
void add(Tensor& out, const Tensor& a, const Tensor& b);
void axpby(Tensor& y, const Tensor& x, float alpha, float beta);
void fill(Tensor& t, float value);
void convert(Tensor& out, const Tensor& in);
// reduce.cpp
double sum_squares(const Tensor& x);
double sum(const Tensor& x);
// adamw.cpp
void adamw_update(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWParams& p);

}  // namespace neox::cpu
