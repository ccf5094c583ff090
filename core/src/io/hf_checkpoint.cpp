// SPDX-License-Identifier: Apache-2.0
// Reading and writing Hugging Face GPTNeoXForCausalLM directories.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <set>
#include <vector>

#include "neox/arena.h"
#include "neox/backend.h"
#include "neox/error.h"
#include "neox/io/hf.h"
#include "neox/io/safetensors.h"

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
  if (act != "gelu") throw Error(file.string() + ": hidden_act '" + act + "' is not supported (only exact 'gelu')");
  if (!get<bool>(j, file, "attention_bias", true))
    throw Error(file.string() + ": attention_bias = false is not supported");
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null())
    throw Error(file.string() + ": rope_scaling is not supported");
  if (j.contains("rope_parameters") && !j["rope_parameters"].is_null()) {  // transformers v5
    const json& rp = j["rope_parameters"];
    if (!rp.is_object()) throw Error(file.string() + ": rope_parameters must be an object");
    auto type = get<std::string>(rp, file, "rope_type", std::string("default"));
    if (type != "default") throw Error(file.string() + ": rope_parameters.rope_type '" + type + "' is not supported");
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
    throw Error(dir +
                ": no model.safetensors or model.safetensors.index.json (PyTorch .bin checkpoints "
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
  std::vector<std::pair<const SafeTensorsFile*, std::string>> sources;  // by parameter index
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
    if (info.dtype != DType::f32 && info.dtype != DType::f64 && info.dtype != DType::f16 && info.dtype != DType::bf16)
      throw Error(f.path() + ": tensor '" + found + "' is " + std::string(dtype_name(info.dtype)) +
                  ", expected a float type");
    sources.emplace_back(&f, found);
  }
  for (const auto& [name, file] : where) {
    if (used.count(name) || is_ignored_buffer(name)) continue;
    if (!cfg.no_weight_tying && (name == "embed_out.weight" || name == "lm_head.weight")) continue;
    throw Error(file + ": unexpected tensor '" + name + "' (not a parameter of this GPT-NeoX model)");
  }
  // Everything checked: copy, one tensor at a time (one unit at a time under ZeRO-3).
  model.set_parameters([&](int i, Tensor& dst) {
    const auto& [file, name] = sources[static_cast<std::size_t>(i)];
    model.backend().copy_tensor(dst, convert_hf_layout(name, file->read(name, DType::f32), cfg, false));
  });
}

// --- writing -------------------------------------------------------------------

Tensor convert_hf_layout(const std::string& name, const Tensor& host, const ModelConfig& config, bool to_hf) {
  if (name.find("query_key_value") == std::string::npos) return host;
  if (!host.device().is_cpu() || host.dtype() != DType::f32)
    throw Error("convert_hf_layout: '" + name + "' must be a host f32 tensor, got " + host.str());
  Tensor permuted = Tensor::empty(nullptr, host.shape(), DType::f32);
  const long cols = host.ndim() == 2 ? static_cast<long>(host.dim(1)) : 1;
  const int heads = static_cast<int>(config.num_attention_heads), head_size = static_cast<int>(config.head_size());
  if (to_hf)
    qkv_to_hf(permuted.ptr<float>(), host.ptr<float>(), heads, head_size, cols);
  else
    qkv_from_hf(permuted.ptr<float>(), host.ptr<float>(), heads, head_size, cols);
  return permuted;
}

void write_hf_safetensors(GPTNeoX& model, const std::string& path, bool write) {
  const ModelConfig& cfg = model.config();
  ParameterArena& arena = model.arena();
  if (!arena.allocated()) throw Error(path + ": the model's parameters are not allocated");
  const bool partitioned = arena.params_partitioned();
  if (partitioned && !model.parameter_hooks())
    throw Error(path + ": the model's parameters are partitioned but it has no ParameterHooks to gather them");
  std::optional<SafeTensorsWriter> writer;
  std::optional<Error> failure;  // the writing rank's first error
  auto attempt = [&](const std::function<void()>& step) {
    if (!write || failure) return;
    try {
      step();
    } catch (const Error& e) {
      failure = e;
    } catch (const std::exception& e) {  // e.g. bad_alloc: still no rank may be left waiting
      failure = Error(path + ": " + e.what());
    }
    if (failure) writer.reset();  // removes the temporary file
  };
  attempt([&] {
    std::vector<SafeTensorsWriter::Entry> layout;
    for (const ParameterSpec& spec : arena.specs()) layout.push_back({spec.name, DType::f32, spec.shape});
    writer.emplace(path, std::move(layout), std::map<std::string, std::string>{{"format", "pt"}});
  });
  const int units = static_cast<int>(arena.units().size());
  std::size_t i = 0;
  for (int u = 0; u < units; ++u) {
    // Every rank gathers every unit, even after the writer failed: the
    // others are in the same all-gathers.
    const bool gather = partitioned && !arena.unit_gathered(u);
    if (gather) model.parameter_hooks()->gather(u);
    for (; i < arena.specs().size() && arena.unit_of(static_cast<int>(i)) == u; ++i)
      attempt([&] {
        const ParameterSpec& spec = arena.specs()[i];
        const Tensor t = arena.param(static_cast<int>(i));
        writer->write(spec.name,
                      convert_hf_layout(spec.name, t.device().is_cpu() ? t : model.backend().to_host(t), cfg, true));
      });
    if (gather) model.parameter_hooks()->release(u);
  }
  attempt([&] { writer->finish(); });
  if (failure) throw *failure;
}

std::string hf_config_json(const ModelConfig& c, const HfExportOptions& options) {
  if (c.pos_emb != "rotary")
    throw Error("Hugging Face export: pos_emb = '" + c.pos_emb +
                "' cannot be represented by GPTNeoXForCausalLM, which has rotary position embeddings only "
                "(export refused; convert only models trained with pos_emb = \"rotary\")");
  c.validate();
  json j = json::object();  // keys sorted, as transformers writes them
  j["architectures"] = json::array({"GPTNeoXForCausalLM"});
  j["model_type"] = "gpt_neox";
  j["attention_bias"] = true;
  j["attention_dropout"] = 0.0;
  j["hidden_dropout"] = 0.0;
  j["hidden_act"] = "gelu";
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.ffn_size();
  j["initializer_range"] = c.init_method_std;
  j["layer_norm_eps"] = c.layernorm_epsilon;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_hidden_layers"] = c.num_layers;
  j["vocab_size"] = c.padded_vocab_size();
  j["tie_word_embeddings"] = !c.no_weight_tying;
  j["use_parallel_residual"] = c.gpt_j_residual;
  j["use_cache"] = true;
  // transformers v4 reads these two; v5 reads rope_parameters (and takes the
  // v4 keys only as defaults for it), so both versions see the same values.
  j["rotary_pct"] = c.rotary_pct;
  j["rotary_emb_base"] = c.rotary_emb_base;
  j["rope_parameters"] = {
      {"rope_type", "default"}, {"rope_theta", c.rotary_emb_base}, {"partial_rotary_factor", c.rotary_pct}};
  j["bos_token_id"] = options.bos_token_id ? json(*options.bos_token_id) : json(nullptr);
  j["eos_token_id"] = options.eos_token_id ? json(*options.eos_token_id) : json(nullptr);
  // The key every Pythia config on the hub has; transformers v5 (which writes
  // "dtype") still reads it.
  j["torch_dtype"] = "float32";
  return j.dump(2) + "\n";
}

namespace {

void sync_fd_path(const fs::path& p, bool directory) {
  int fd = ::open(p.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) throw Error(p.string() + ": cannot open to sync: " + std::strerror(errno));
  if (::fsync(fd) != 0) {
    int err = errno;
    ::close(fd);
    if (directory && (err == EINVAL || err == EROFS)) return;
    throw Error(p.string() + ": cannot sync: " + std::strerror(err));
  }
  ::close(fd);
}

void write_text_synced(const fs::path& path, const std::string& text) {
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    if (!out) throw Error(path.string() + ": cannot create: " + std::strerror(errno));
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    out.flush();
    if (!out) throw Error(path.string() + ": cannot write");
  }
  sync_fd_path(path, false);
}

}  // namespace

void save_hf(GPTNeoX& model, const std::string& dir, const HfExportOptions& options) {
  const std::string config_text = hf_config_json(model.config(), options);  // refuses first
  if (dir.empty()) throw Error("save_hf: the output directory is empty");
  fs::path dest = fs::path(dir).lexically_normal();
  if (!dest.has_filename() && dest.has_parent_path()) dest = dest.parent_path();
  std::error_code ec;
  if (fs::exists(fs::symlink_status(dest, ec))) {
    if (!fs::is_directory(dest, ec)) throw Error(dest.string() + ": exists and is not a directory");
    if (!fs::is_empty(dest, ec))
      throw Error(dest.string() + ": exists and is not empty; choose a new directory or remove it first");
  }
  const fs::path parent = dest.has_parent_path() ? dest.parent_path() : fs::path(".");
  fs::create_directories(parent, ec);
  if (ec) throw Error(parent.string() + ": cannot create: " + ec.message());

  // Remove temporaries of interrupted exports to the same directory.
  const std::string pid = std::to_string(::getpid());
  const std::string tmp_prefix = dest.filename().string() + ".tmp-";
  for (fs::directory_iterator it(parent, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.rfind(tmp_prefix, 0) != 0) continue;
    const std::string suffix = name.substr(tmp_prefix.size());
    if (suffix.empty() || suffix == pid ||
        !std::all_of(suffix.begin(), suffix.end(), [](char ch) { return ch >= '0' && ch <= '9'; }))
      continue;
    std::error_code rm;
    fs::remove_all(it->path(), rm);
  }

  const fs::path tmp = parent / (tmp_prefix + pid);
  fs::remove_all(tmp, ec);
  if (!fs::create_directory(tmp, ec) || ec)
    throw Error(tmp.string() + ": cannot create: " + (ec ? ec.message() : std::string("it already exists")));
  try {
    write_text_synced(tmp / "config.json", config_text);
    write_hf_safetensors(model, (tmp / "model.safetensors").string());
    sync_fd_path(tmp, true);
    if (fs::exists(fs::symlink_status(dest, ec))) fs::remove(dest);  // empty, checked above
    if (std::rename(tmp.c_str(), dest.c_str()) != 0)
      throw Error(dest.string() + ": cannot rename " + tmp.string() + " into place: " + std::strerror(errno));
    sync_fd_path(parent, true);
  } catch (...) {
    std::error_code rm;
    fs::remove_all(tmp, rm);
    throw;
  }
}

}  // namespace neox
