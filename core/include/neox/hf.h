// SPDX-License-Identifier: Apache-2.0
// Hugging Face GPTNeoXForCausalLM directories: config.json + safetensors.
#pragma once

#include <string>

#include "neox/export.h"
#include "neox/model.h"

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

}  // namespace neox
