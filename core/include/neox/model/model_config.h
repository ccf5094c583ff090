// SPDX-License-Identifier: Apache-2.0
// ModelConfig: GPT-NeoX's architecture settings and the sizes derived from
// them; ComputeOptions: how the model computes (precision, recomputation).
#pragma once

#include <cstdint>
#include <string>

#include "neox/dtype.h"
#include "neox/export.h"

namespace neox {

// GPT-NeoX's model settings (names as in GPT-NeoX's YAML configs).
struct ModelConfig {
  std::int64_t num_layers = 6;
  std::int64_t hidden_size = 384;
  std::int64_t num_attention_heads = 6;
  std::int64_t intermediate_size = 0;  // 0: 4 * hidden_size
  std::int64_t vocab_size = 257;       // the tokenizer's vocabulary
  std::int64_t make_vocab_size_divisible_by = 128;
  std::int64_t seq_length = 256;
  std::int64_t max_position_embeddings = 256;
  std::string pos_emb = "rotary";  // rotary | learned | none
  double rotary_pct = 1.0;
  double rotary_emb_base = 10000.0;
  bool gpt_j_residual = false;  // parallel attention + MLP residual
  bool no_weight_tying = true;  // false: the output layer reuses embed_in
  double layernorm_epsilon = 1e-5;
  std::string init_method = "normal";               // normal | small_init | wang_init
  std::string output_layer_init_method = "normal";  // normal | small_init | wang_init
  double init_method_std = 0.02;

  std::int64_t ffn_size() const { return intermediate_size > 0 ? intermediate_size : 4 * hidden_size; }
  std::int64_t head_size() const { return hidden_size / num_attention_heads; }
  // Rotary dimensions per head: int(head_size * rotary_pct), as HF computes it.
  int rotary_dims() const;
  // vocab_size rounded up to make_vocab_size_divisible_by.
  std::int64_t padded_vocab_size() const;
  // Parameter count (embeddings included).
  std::int64_t num_parameters() const;
  // Throws neox::Error naming the first inconsistent setting.
  void validate() const;
};

// How the model computes: not part of the architecture (a checkpoint loads
// under any of these).
struct ComputeOptions {
  // Activations and the weights' compute copy: f32, bf16 or f16. With bf16
  // or f16 the f32 parameters stay the master copy and gradients are f32
  // (see kernels.h, "Precision").
  DType dtype = DType::f32;
  // GPT-NeoX's checkpoint_activations: keep only each chunk's input during
  // forward and recompute the chunk's activations in backward.
  bool checkpoint_activations = false;
  // Transformer blocks per recomputed chunk (GPT-NeoX's checkpoint_num_layers).
  std::int64_t checkpoint_num_layers = 1;
};

}  // namespace neox
