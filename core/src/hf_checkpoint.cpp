// SPDX-License-Identifier: Apache-2.0
// Reading Hugging Face GPTNeoXForCausalLM directories.
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <vector>

#include "neox/arena.h"
#include "neox/backend.h"
#include "neox/error.h"
#include "neox/hf.h"
#include "neox/safetensors.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace neox {

namespace {

json read_json(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw Error(path.string() + ": cannot open");
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    throw Error(path.string() + ": not valid JSON: " + e.what());
  }
}

template <typename T>
T get(const json& j, const fs::path& file, const std::string& key, std::optional<T> def = std::nullopt) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (def) return *def;
    throw Error(file.string() + ": missing key '" + key + "'");
  }
  try {
    if constexpr (std::is_same_v<T, double>) {
      if (!it->is_number()) throw Error("");
    } else if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
      if (!it->is_number_integer()) throw Error("");
    }
    return it->get<T>();
  } catch (const std::exception&) {
    throw Error(file.string() + ": key '" + key + "' has the wrong type (" + it->type_name() + ")");
  }
}

}  // namespace

ModelConfig read_hf_config(const std::string& dir) {
  return read_hf_config_file((fs::path(dir) / "config.json").string());
}

ModelConfig read_hf_config_file(const std::string& path) {
  const fs::path file(path);
  json j = read_json(file);
  if (!j.is_object()) throw Error(file.string() + ": expected a JSON object");
  auto model_type = get<std::string>(j, file, "model_type", std::string("gpt_neox"));
  if (model_type != "gpt_neox")
    throw Error(file.string() + ": model_type '" + model_type + "' is not supported (only gpt_neox)");
  ModelConfig c;
  c.num_layers = get<std::int64_t>(j, file, "num_hidden_layers");
  c.hidden_size = get<std::int64_t>(j, file, "hidden_size");
  c.num_attention_heads = get<std::int64_t>(j, file, "num_attention_heads");
  c.intermediate_size = get<std::int64_t>(j, file, "intermediate_size", 4 * c.hidden_size);
  c.vocab_size = get<std::int64_t>(j, file, "vocab_size");
  c.make_vocab_size_divisible_by = 1;  // the checkpoint's vocabulary is already padded
  c.max_position_embeddings = get<std::int64_t>(j, file, "max_position_embeddings", 2048);
  c.seq_length = c.max_position_embeddings;
  c.layernorm_epsilon = get<double>(j, file, "layer_norm_eps", 1e-5);
  c.gpt_j_residual = get<bool>(j, file, "use_parallel_residual", true);
  c.no_weight_tying = !get<bool>(j, file, "tie_word_embeddings", false);
  c.init_method_std = get<double>(j, file, "initializer_range", 0.02);
  c.pos_emb = "rotary";
  auto act = get<std::string>(j, file, "hidden_act", std::string("gelu"));
  if (act != "gelu")
    throw Error(file.string() + ": hidden_act '" + act + "' is not supported (only exact 'gelu')");
  if (!get<bool>(j, file, "attention_bias", true))
    throw Error(file.string() + ": attention_bias = false is not supported");
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null())
    throw Error(file.string() + ": rope_scaling is not supported");
  if (j.contains("rope_parameters") && !j["rope_parameters"].is_null()) {  // transformers v5
    const json& rp = j["rope_parameters"];
    if (!rp.is_object()) throw Error(file.string() + ": rope_parameters must be an object");
    auto type = get<std::string>(rp, file, "rope_type", std::string("default"));
    if (type != "default")
      throw Error(file.string() + ": rope_parameters.rope_type '" + type + "' is not supported");
    c.rotary_pct = get<double>(rp, file, "partial_rotary_factor", 1.0);
    c.rotary_emb_base = get<double>(rp, file, "rope_theta", 10000.0);
  } else {  // transformers v4 keys
    c.rotary_pct = get<double>(j, file, "rotary_pct", 0.25);
    c.rotary_emb_base = get<double>(j, file, "rotary_emb_base", 10000.0);
  }
  try {
    c.validate();
  } catch (const Error& e) {
    throw Error(file.string() + ": " + e.what());
  }
  return c;
}

void qkv_from_hf(float* dst, const float* src, int n_head, int head_size, long cols) {
  // HF rows: [head][q|k|v][head_size]; neox rows: [q|k|v][head][head_size].
  for (int h = 0; h < n_head; ++h)
    for (int part = 0; part < 3; ++part)
      for (int r = 0; r < head_size; ++r) {
        const long from = (static_cast<long>(h) * 3 + part) * head_size + r;
        const long to = (static_cast<long>(part) * n_head + h) * head_size + r;
        std::copy(src + from * cols, src + (from + 1) * cols, dst + to * cols);
      }
}

void qkv_to_hf(float* dst, const float* src, int n_head, int head_size, long cols) {
  for (int h = 0; h < n_head; ++h)
    for (int part = 0; part < 3; ++part)
      for (int r = 0; r < head_size; ++r) {
        const long to = (static_cast<long>(h) * 3 + part) * head_size + r;
        const long from = (static_cast<long>(part) * n_head + h) * head_size + r;
        std::copy(src + from * cols, src + (from + 1) * cols, dst + to * cols);
      }
}

namespace {

bool is_ignored_buffer(const std::string& name) {
  static const std::regex buffers(
      R"(gpt_neox\.(layers\.\d+\.attention\.(bias|masked_bias|rotary_emb\.inv_freq)|rotary_emb\.inv_freq))");
  return std::regex_match(name, buffers);
}

// Names a parameter may have in a checkpoint (embed_out is lm_head in some exports).
std::vector<std::string> checkpoint_names(const std::string& name) {
  if (name == "embed_out.weight") return {"embed_out.weight", "lm_head.weight"};
  return {name};
}

}  // namespace

void load_hf_weights(GPTNeoX& model, const std::string& dir) {
  const fs::path root(dir);
  // tensor name -> file
  std::map<std::string, std::string> where;
  std::map<std::string, SafeTensorsFile> files;
  const fs::path index = root / "model.safetensors.index.json";
  if (fs::exists(index)) {
    json j = read_json(index);
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
      throw Error(index.string() + ": missing object 'weight_map'");
    for (auto& [name, file] : j["weight_map"].items()) {
      if (!file.is_string()) throw Error(index.string() + ": weight_map['" + name + "'] is not a string");
      auto shard = file.get<std::string>();
      if (shard.find('/') != std::string::npos || shard.find("..") != std::string::npos)
        throw Error(index.string() + ": shard name '" + shard + "' must be a file in the same directory");
      where[name] = (root / shard).string();
    }
  } else if (fs::exists(root / "model.safetensors")) {
    where.clear();
  } else {
    throw Error(dir + ": no model.safetensors or model.safetensors.index.json (PyTorch .bin checkpoints "
                "are not read; save the model with safe_serialization=True)");
  }
  auto open = [&](const std::string& path) -> const SafeTensorsFile& {
    auto it = files.find(path);
    if (it == files.end()) it = files.emplace(path, SafeTensorsFile::open(path)).first;
    return it->second;
  };
  if (where.empty()) {
    const auto& f = open((root / "model.safetensors").string());
    for (const auto& t : f.tensors()) where[t.name] = f.path();
  }

  const ModelConfig& cfg = model.config();
  ParameterArena& arena = model.arena();
  std::set<std::string> used;
  for (const auto& spec : arena.specs()) {
    std::string found;
    for (const auto& candidate : checkpoint_names(spec.name))
      if (where.count(candidate)) {
        if (!found.empty())
          throw Error(dir + ": both '" + found + "' and '" + candidate + "' are present; expected one");
        found = candidate;
      }
    if (found.empty()) throw Error(dir + ": parameter '" + spec.name + "' is missing from the checkpoint");
    used.insert(found);
    const SafeTensorsFile& f = open(where[found]);
    const SafeTensorInfo& info = f.info(found);
    if (info.shape != spec.shape)
      throw Error(f.path() + ": tensor '" + found + "' has shape " + shape_str(info.shape) + ", the model expects " +
                  shape_str(spec.shape));
    Tensor host = f.read(found, DType::f32);
    if (spec.name.find("query_key_value") != std::string::npos) {
      Tensor permuted = Tensor::empty(nullptr, host.shape(), DType::f32);
      long cols = host.ndim() == 2 ? static_cast<long>(host.dim(1)) : 1;
      qkv_from_hf(permuted.ptr<float>(), host.ptr<float>(), static_cast<int>(cfg.num_attention_heads),
                  static_cast<int>(cfg.head_size()), cols);
      host = permuted;
    }
    Tensor dst = arena.param(spec.name);
    model.backend().copy_tensor(dst, host);
  }
  for (const auto& [name, file] : where) {
    if (used.count(name) || is_ignored_buffer(name)) continue;
    if (!cfg.no_weight_tying && (name == "embed_out.weight" || name == "lm_head.weight")) continue;
    throw Error(file + ": unexpected tensor '" + name + "' (not a parameter of this GPT-NeoX model)");
  }
}

}  // namespace neox
