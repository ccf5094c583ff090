// SPDX-License-Identifier: Apache-2.0
// model_config_toml: a ModelConfig as the [model] table that parse_config
// reads back to the same values (every key written; floats in the shortest
// form that reads back exactly).
#include <charconv>
#include <cmath>
#include <cstdio>
#include <string>

#include "neox/error.h"
#include "neox/train/config.h"

namespace neox {

namespace {

std::string toml_float(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, v);  // shortest round-trip form
  std::string s(buf, res.ptr);
  if (s.find_first_of(".e") == std::string::npos) s += ".0";  // TOML needs a fraction or exponent
  return s;
}

std::string toml_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20 || u == 0x7f) {
      char esc[8];
      std::snprintf(esc, sizeof esc, "\\u%04x", u);
      out += esc;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

}  // namespace

std::string model_config_toml(const ModelConfig& m) {
  std::string out = "[model]\n";
  auto line = [&](const char* key, const std::string& value) { out += std::string(key) + " = " + value + "\n"; };
  auto integer = [&](const char* key, std::int64_t v) { line(key, std::to_string(v)); };
  auto real = [&](const char* key, double v) { line(key, toml_float(v)); };
  auto boolean = [&](const char* key, bool v) { line(key, v ? "true" : "false"); };
  auto string = [&](const char* key, const std::string& v) { line(key, toml_string(v)); };
  integer("num_layers", m.num_layers);
  integer("hidden_size", m.hidden_size);
  integer("num_attention_heads", m.num_attention_heads);
  integer("intermediate_size", m.intermediate_size);
  integer("vocab_size", m.vocab_size);
  integer("make_vocab_size_divisible_by", m.make_vocab_size_divisible_by);
  integer("seq_length", m.seq_length);
  integer("max_position_embeddings", m.max_position_embeddings);
  string("pos_emb", m.pos_emb);
  real("rotary_pct", m.rotary_pct);
  real("rotary_emb_base", m.rotary_emb_base);
  boolean("gpt_j_residual", m.gpt_j_residual);
  boolean("no_weight_tying", m.no_weight_tying);
  real("layernorm_epsilon", m.layernorm_epsilon);
  string("init_method", m.init_method);
  string("output_layer_init_method", m.output_layer_init_method);
  real("init_method_std", m.init_method_std);
  return out;
}

ComputeOptions compute_options(const TrainingConfig& t) {
  ComputeOptions c;
  c.dtype = t.precision == "bf16" ? DType::bf16 : t.precision == "fp16" ? DType::f16 : DType::f32;
  c.checkpoint_activations = t.checkpoint_activations;
  c.checkpoint_num_layers = t.checkpoint_num_layers;
  return c;
}

}  // namespace neox
