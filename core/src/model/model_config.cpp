// SPDX-License-Identifier: Apache-2.0
#include <cmath>
#include <string>

#include "neox/error.h"
#include "neox/model/gpt_neox.h"

namespace neox {

int ModelConfig::rotary_dims() const {
  if (pos_emb != "rotary") return 0;
  return static_cast<int>(static_cast<double>(head_size()) * rotary_pct);
}

std::int64_t ModelConfig::padded_vocab_size() const {
  std::int64_t m = make_vocab_size_divisible_by > 0 ? make_vocab_size_divisible_by : 1;
  return (vocab_size + m - 1) / m * m;
}

std::int64_t ModelConfig::num_parameters() const {
  const std::int64_t C = hidden_size, F = ffn_size(), V = padded_vocab_size();
  std::int64_t per_layer = 2 * 2 * C            // two LayerNorms
                           + 3 * C * C + 3 * C  // query_key_value
                           + C * C + C          // attention dense
                           + F * C + F          // dense_h_to_4h
                           + C * F + C;         // dense_4h_to_h
  std::int64_t n = V * C + num_layers * per_layer + 2 * C;
  if (pos_emb == "learned") n += max_position_embeddings * C;
  if (no_weight_tying) n += V * C;
  return n;
}

void ModelConfig::validate() const {
  auto fail = [](const std::string& msg) { throw Error("model: " + msg); };
  if (num_layers < 1) fail("num_layers must be at least 1");
  if (hidden_size < 1 || num_attention_heads < 1) fail("hidden_size and num_attention_heads must be positive");
  if (hidden_size % num_attention_heads != 0)
    fail("hidden_size (" + std::to_string(hidden_size) + ") must be divisible by num_attention_heads (" +
         std::to_string(num_attention_heads) + ")");
  if (vocab_size < 1) fail("vocab_size must be positive");
  if (seq_length < 1) fail("seq_length must be positive");
  if (max_position_embeddings < seq_length)
    fail("max_position_embeddings (" + std::to_string(max_position_embeddings) + ") must be at least seq_length (" +
         std::to_string(seq_length) + ")");
  if (pos_emb != "rotary" && pos_emb != "learned" && pos_emb != "none")
    fail("pos_emb must be rotary, learned or none, not '" + pos_emb + "'");
  if (pos_emb == "rotary") {
    if (!(rotary_pct > 0.0 && rotary_pct <= 1.0)) fail("rotary_pct must be in (0, 1]");
    int rd = rotary_dims();
    if (rd < 2 || rd % 2 != 0)
      fail("rotary_pct " + std::to_string(rotary_pct) + " gives " + std::to_string(rd) +
           " rotary dimensions per head; it must be an even number of at least 2");
    if (!(rotary_emb_base > 0.0)) fail("rotary_emb_base must be positive");
  }
  if (!(layernorm_epsilon > 0.0)) fail("layernorm_epsilon must be positive");
  for (const auto* m : {&init_method, &output_layer_init_method})
    if (*m != "normal" && *m != "small_init" && *m != "wang_init")
      fail("init method '" + *m + "' is not one of normal, small_init, wang_init");
  if (!(init_method_std > 0.0)) fail("init_method_std must be positive");
}

}  // namespace neox
