// SPDX-License-Identifier: Apache-2.0
// Hugging Face GPTNeoXForCausalLM directories: config.json + safetensors.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "neox/export.h"
#include "neox/model/gpt_neox.h"

namespace neox {

// Reads config.json (v4 keys rotary_pct / rotary_emb_base, or v5
// rope_parameters {partial_rotary_factor, rope_theta}); throws neox::Error
// naming the file and key for anything unsupported or missing.
NEOX_API ModelConfig read_hf_config(const std::string& dir);
// The same for a config file given by path.
NEOX_API ModelConfig read_hf_config_file(const std::string& path);

// Copies weights from model.safetensors or the shards listed in
// model.safetensors.index.json into the model's arena (any float dtype,
// converted to f32). Every parameter must be present exactly once with the
// right shape; unknown tensors other than known buffers are an error.
NEOX_API void load_hf_weights(GPTNeoX& model, const std::string& dir);

// Maps the Hugging Face query_key_value layout (per head: q, k, v of head_size
// rows each) to neox's (all heads' q, then k, then v), for a weight
// [3C, C] (cols = C) or a bias [3C] (cols = 1); and back.
NEOX_API void qkv_from_hf(float* dst, const float* src, int n_head, int head_size, long cols);
NEOX_API void qkv_to_hf(float* dst, const float* src, int n_head, int head_size, long cols);
// Parameter `name` (host f32, as stored) in neox's layout from Hugging
// Face's (to_hf = false) or back (true): query_key_value tensors are
// permuted into a new tensor, every other one is returned as it is.
NEOX_API Tensor convert_hf_layout(const std::string& name, const Tensor& host, const ModelConfig& config, bool to_hf);

// Writes the model's parameters to `path` as a Hugging Face model.safetensors
// (f32, Hugging Face names and layout, query_key_value converted with
// qkv_to_hf, metadata {"format": "pt"}), one tensor at a time: no more than
// one tensor's host copy exists at once. With partitioned parameters (ZeRO-3)
// each unit is gathered through the model's hooks while its tensors are
// written, so this is a collective call: every rank makes it, and only the
// one with write = true writes. That rank's error is thrown after the last
// unit, so that the others are never left waiting in a gather.
NEOX_API void write_hf_safetensors(GPTNeoX& model, const std::string& path, bool write = true);

// What a Hugging Face export cannot learn from ModelConfig.
struct HfExportOptions {
  std::optional<std::int64_t> bos_token_id;  // written as null when unknown
  std::optional<std::int64_t> eos_token_id;
};

// config.json for GPTNeoXForCausalLM, readable by transformers v4 (rotary_pct,
// rotary_emb_base) and v5 (rope_parameters); vocab_size is the padded vocab.
// Throws neox::Error for models Hugging Face cannot represent (pos_emb
// learned or none).
NEOX_API std::string hf_config_json(const ModelConfig& config, const HfExportOptions& options = {});

// Writes DIR/config.json and DIR/model.safetensors (f32, metadata
// {"format": "pt"}; embed_out.weight only when untied). The files are written
// into DIR.tmp-<pid> and the directory is renamed to DIR when complete; DIR
// must not exist or be empty. Throws neox::Error as hf_config_json does.
NEOX_API void save_hf(GPTNeoX& model, const std::string& dir, const HfExportOptions& options = {});

}  // namespace neox
