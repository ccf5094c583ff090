// SPDX-License-Identifier: Apache-2.0
// Config: one TOML file holding the plugin manifest and the run's settings.
//
//   [plugins]                 which plugin fills each slot, search paths
//   [plugins.kernels]         per-op kernel overrides: op = "provider"
//   [plugins.options.<name>]  options passed to plugin <name>
//   [model]                   GPT-NeoX model settings (ModelConfig)
//   [optimizer]               AdamW settings
//   [training]                batch sizes, iterations, seed
//   [tokenizer]               the tokenizer of the run's text
//
// Every key is validated against a schema: an unknown key or table, a wrong
// type or an out-of-range value throws neox::Error "<file>:<line>:<col>:
// <table>.<key>: <problem>". configs/README.md is generated from the same
// schema (config_reference_markdown) and a test keeps them equal.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "neox/export.h"
#include "neox/model/model_config.h"
#include "neox/optimizer.h"
#include "neox/options.h"
#include "neox/text/tokenizers.h"

namespace neox {

struct PluginsConfig {
  std::string backend = "cpu";
  std::string comm = "local";
  std::string optimizer = "adamw";
  std::string zero_optimizer = "zero";         // the optimizer of training.zero_stage > 0
  std::string data = "";                       // empty: none chosen
  std::vector<std::string> search_paths;       // relative to the config file
  std::map<std::string, std::string> kernels;  // op -> kernels plugin
  std::map<std::string, Options> options;      // plugin name -> its table
  // The options table for a plugin (an empty table when none was given).
  Options options_for(const std::string& plugin) const;
};

struct OptimizerConfig {
  std::string type = "adamw";
  double lr = 6e-4;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.0;
  // Learning-rate schedule (GPT-NeoX's AnnealingLR).
  std::string lr_decay_style = "linear";  // constant | linear | cosine | exponential
  std::int64_t lr_decay_iters = 0;        // 0: train_iters
  double min_lr = 0.0;
  double warmup = 0.01;            // fraction of train_iters warmed up linearly
  double gradient_clipping = 1.0;  // global-norm clipping; 0: off
};

struct TrainingConfig {
  std::int64_t train_micro_batch_size_per_gpu = 4;
  std::int64_t gradient_accumulation_steps = 1;
  std::int64_t train_iters = 100;
  std::uint64_t seed = 1234;
  std::int64_t eval_interval = 1000;
  std::int64_t eval_iters = 10;
  std::int64_t log_interval = 10;
  std::string log_dir = "runs";  // run directories go here
  std::string run_name = "";     // empty: a timestamp
  bool tensorboard = true;       // write a TensorBoard event file in the run directory
  double peak_tflops = 0.0;      // device peak for MFU; 0: MFU not shown
  std::string save = "";         // checkpoint directory; empty: no checkpoints
  std::string load = "";         // checkpoint to resume from, or hf:DIR
  std::int64_t checkpoint_factor = 1000;
  std::int64_t keep_last_n_checkpoints = 0;  // 0: keep all
  bool finetune = false;                     // load weights only, start at step 0
  std::int64_t exit_interval = 0;            // stop (with a checkpoint) after a multiple of this; 0: never
  std::string precision = "fp32";            // fp32 | bf16 | fp16
  bool checkpoint_activations = false;       // recompute activations in backward
  std::int64_t checkpoint_num_layers = 1;
  // fp16 loss scaling (GPT-NeoX's fp16 block, DeepSpeed semantics).
  double loss_scale = 0.0;  // 0: dynamic
  std::int64_t initial_scale_power = 16;
  std::int64_t loss_scale_window = 1000;
  std::int64_t hysteresis = 2;
  double min_loss_scale = 1.0;
  // Settings of GPT-NeoX configs that this version cannot honour yet are
  // kept so that a config asking for them is refused, not silently ignored.
  std::int64_t model_parallel_size = 1;
  std::int64_t pipe_parallel_size = 1;
  // DeepSpeed's zero_optimization block: stage > 0 trains with the `zero`
  // optimizer plugin (AdamW with ZeRO partitioning).
  std::int64_t zero_stage = 0;
  std::int64_t zero_reduce_bucket_size = 500'000'000;     // elements
  std::int64_t zero_allgather_bucket_size = 500'000'000;  // elements
  bool zero_overlap_comm = false;
  bool zero_contiguous_gradients = true;
};

struct Config {
  std::string path;  // the file it came from ("" if built in code)
  PluginsConfig plugins;
  ModelConfig model;
  OptimizerConfig optimizer;
  TrainingConfig training;
  TokenizerConfig tokenizer;
};

// Parses and validates a file. `overrides` are "dotted.key=value" strings
// (value in TOML syntax, bare strings allowed) applied after the file, with
// the same validation; errors name "<command line>" and the key.
NEOX_API Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});
// The same from text; `source_name` stands in for the file name in messages.
NEOX_API Config parse_config(std::string_view toml_text, const std::string& source_name,
                             const std::vector<std::string>& overrides = {});
// The optimizer plugin a run uses: plugins.optimizer, except that
// training.zero_stage > 0 turns the default optimizer into
// plugins.zero_optimizer (AdamW with ZeRO partitioning). Throws for a stage
// the chosen plugin cannot honour.
NEOX_API std::string optimizer_plugin(const Config& config);
// What the config asks of the optimizer plugin: [optimizer] type, beta1,
// beta2, eps and [training]'s zero_* settings (the plugin's own options
// table, config.plugins.options_for(name), is passed beside it).
NEOX_API OptimizerContext optimizer_context(const Config& config);

// The whole config as TOML: every key of every table with its value
// (defaults included), kernel overrides and plugin options. parse_config of
// the text gives back an equal Config (search paths become absolute).
NEOX_API std::string config_to_toml(const Config& config);

// `model` as a [model] table (every key, floats exact) that parse_config
// reads back to the same ModelConfig; used to write a checkpoint's config.toml.
NEOX_API std::string model_config_toml(const ModelConfig& model);

// How the model computes under [training]'s precision and activation
// checkpointing settings.
NEOX_API ComputeOptions compute_options(const TrainingConfig& training);

// Markdown reference of every key, its type, default, range and meaning.
NEOX_API std::string config_reference_markdown();

}  // namespace neox
