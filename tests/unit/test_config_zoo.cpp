// SPDX-License-Identifier: Apache-2.0
// The model zoo: configs/neox/*.toml (GPT-NeoX's example configs) and
// configs/pythia/*.toml (the Pythia suite). Every config under configs/ parses;
// the Pythia and GPT-NeoX-20B configs give the parameter counts and padded
// vocabularies of the released checkpoints; hyperparameters (fp16 loss scaling,
// activation checkpointing and ZeRO settings included) are spot-checked against
// the original YAML files; each header's source commit, parameter count and CPU
// overrides agree with the file.
#include <gtest/gtest.h>

#include "test_support.h"

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "neox/options.h"
#include "neox/train/config.h"

namespace {

namespace fs = std::filesystem;
using neox::Config;

const fs::path kConfigs = fs::path(neox::test::source_dir()) / "configs";

Config load(const std::string& rel) { return neox::load_config((kConfigs / rel).string()); }

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<fs::path> toml_files(const fs::path& dir) {
  std::vector<fs::path> out;
  for (auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file() && e.path().extension() == ".toml") out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

// 1234567 -> "1,234,567", as the headers write counts.
std::string with_commas(std::int64_t n) {
  std::string s = std::to_string(n), out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i > 0 && (s.size() - i) % 3 == 0) out += ',';
    out += s[i];
  }
  return out;
}

const char* const kNeoxNames[] = {"19M", "49M", "125M", "350M", "760M", "1-3B", "2-7B", "6-7B", "13B", "20B"};
const char* const kPythiaNames[] = {"14M", "31M", "70M", "160M", "410M", "1B", "1-4B", "2-8B", "6-9B", "12B"};

// ---------------------------------------------------------------------------
// Every config in the repository

TEST(ConfigZoo, EveryTomlUnderConfigsParses) {
  auto files = toml_files(kConfigs);
  for (auto& p : files) {
    SCOPED_TRACE(p.string());
    Config c;
    EXPECT_NO_THROW(c = neox::load_config(p.string()));
    EXPECT_NO_THROW(c.model.validate());
    EXPECT_GT(c.model.num_parameters(), 0);
  }
  EXPECT_GE(files.size(), 22u);  // the top-level configs and the 20 of the zoo
}

TEST(ConfigZoo, HasEveryModel) {
  for (const char* n : kNeoxNames) EXPECT_TRUE(fs::exists(kConfigs / "neox" / (std::string(n) + ".toml"))) << n;
  for (const char* n : kPythiaNames) EXPECT_TRUE(fs::exists(kConfigs / "pythia" / (std::string(n) + ".toml"))) << n;
  EXPECT_EQ(toml_files(kConfigs / "neox").size(), 10u);
  EXPECT_EQ(toml_files(kConfigs / "pythia").size(), 10u);
}

// ---------------------------------------------------------------------------
// Parameter counts of the released checkpoints

struct Published {
  const char* file;
  std::int64_t total;          // all parameters
  std::int64_t non_embedding;  // without embed_in and embed_out
  std::int64_t padded_vocab;   // rows of embed_in / embed_out
};

// Total and non-embedding counts: the "Naming convention and parameter count"
// table of the Pythia model cards on Hugging Face (EleutherAI/pythia-14m ...
// pythia-12b; the same table is in the EleutherAI/pythia README). They were
// also recomputed here from the architecture (12 h^2 + 13 h per layer, 2 h for
// the final LayerNorm, 2 * rows * h for the untied embeddings) and agree.
// The embedding rows follow from the two counts: (total - non_embedding) /
// (2 * hidden_size). They are 50304 (the 20B tokenizer's 50277 tokens padded to
// a multiple of 128) up to 2.8B, but 50432 for 6.9B and 50688 for 12B, which
// were trained with 2- and 4-way tensor parallelism: GPT-NeoX pads to a multiple
// of 128 * model_parallel_size (megatron/tokenizer/tokenizer.py,
// _vocab_size_with_padding), so those configs set make_vocab_size_divisible_by
// to 256 and 512.
const Published kPythia[] = {
    {"pythia/14M.toml", 14'067'712, 1'189'888, 50304},
    {"pythia/31M.toml", 30'494'720, 4'739'072, 50304},
    {"pythia/70M.toml", 70'426'624, 18'915'328, 50304},
    {"pythia/160M.toml", 162'322'944, 85'056'000, 50304},
    {"pythia/410M.toml", 405'334'016, 302'311'424, 50304},
    {"pythia/1B.toml", 1'011'781'632, 805'736'448, 50304},
    {"pythia/1-4B.toml", 1'414'647'808, 1'208'602'624, 50304},
    {"pythia/2-8B.toml", 2'775'208'960, 2'517'652'480, 50304},
    {"pythia/6-9B.toml", 6'857'302'016, 6'444'163'072, 50432},
    {"pythia/12B.toml", 11'846'072'320, 11'327'027'200, 50688},
};

TEST(ConfigZoo, PythiaParameterCountsMatchTheReleasedCheckpoints) {
  for (const auto& p : kPythia) {
    SCOPED_TRACE(p.file);
    Config c = load(p.file);
    const auto& m = c.model;
    EXPECT_EQ(m.vocab_size, 50277);  // len() of the GPT-NeoX-20B tokenizer
    EXPECT_EQ(m.padded_vocab_size(), p.padded_vocab);
    EXPECT_EQ((p.total - p.non_embedding) % (2 * m.hidden_size), 0);
    EXPECT_EQ((p.total - p.non_embedding) / (2 * m.hidden_size), p.padded_vocab);
    EXPECT_EQ(m.num_parameters(), p.total);
    EXPECT_EQ(m.num_parameters() - 2 * m.padded_vocab_size() * m.hidden_size, p.non_embedding);
    // model_parallel_size as in the original, and the padding it implies.
    EXPECT_EQ(m.make_vocab_size_divisible_by, 128 * c.training.model_parallel_size);
  }
}

TEST(ConfigZoo, GptNeox20BParameterCount) {
  Config c = load("neox/20B.toml");
  // EleutherAI/gpt-neox-20b: 50432 embedding rows (its config.json's vocab_size),
  // 20,554,567,680 parameters; both recomputed here from the architecture.
  EXPECT_EQ(c.model.vocab_size, 50277);
  EXPECT_EQ(c.training.model_parallel_size, 2);
  EXPECT_EQ(c.model.padded_vocab_size(), 50432);
  EXPECT_EQ(c.model.num_parameters(), 20'554'567'680);
}

TEST(ConfigZoo, Gpt2TokenizerConfigsPadTo50304) {
  for (const char* n : kNeoxNames) {
    if (std::string(n) == "20B") continue;
    SCOPED_TRACE(n);
    Config c = load("neox/" + std::string(n) + ".toml");
    EXPECT_EQ(c.model.vocab_size, 50257);
    EXPECT_EQ(c.model.padded_vocab_size(), 50304);
  }
}

// ---------------------------------------------------------------------------
// Hyperparameters against the original YAML files

TEST(ConfigZoo, PythiaHyperparameters) {
  struct Row {
    const char* file;
    std::int64_t layers, hidden, heads;
    double lr;
    std::int64_t micro_batch, grad_accum, model_parallel, zero_stage;
    bool checkpoint_activations;
    std::int64_t zero_bucket;  // allgather_bucket_size = reduce_bucket_size
  };
  // EleutherAI/pythia models/*/pythia-*.yml (commits in each file's header).
  const Row rows[] = {
      {"pythia/14M.toml", 6, 128, 4, 1e-3, 32, 1, 1, 0, false, 50'000'000},
      {"pythia/31M.toml", 6, 256, 8, 1e-3, 32, 1, 1, 0, false, 500'000'000},
      {"pythia/70M.toml", 6, 512, 8, 1e-3, 32, 1, 1, 1, true, 500'000'000},
      {"pythia/160M.toml", 12, 768, 12, 6e-4, 32, 1, 1, 1, true, 500'000'000},
      {"pythia/410M.toml", 24, 1024, 16, 3e-4, 32, 1, 1, 1, true, 500'000'000},
      {"pythia/1B.toml", 16, 2048, 8, 2.5e-4, 16, 1, 1, 1, true, 500'000'000},
      {"pythia/1-4B.toml", 24, 2048, 16, 2e-4, 16, 1, 1, 1, true, 500'000'000},
      {"pythia/2-8B.toml", 32, 2560, 32, 1.6e-4, 16, 1, 1, 1, true, 500'000'000},
      {"pythia/6-9B.toml", 32, 4096, 32, 1.2e-4, 8, 2, 2, 1, true, 1'260'000'000},
      {"pythia/12B.toml", 36, 5120, 40, 1.2e-4, 8, 2, 4, 1, true, 1'260'000'000},
  };
  for (const auto& r : rows) {
    SCOPED_TRACE(r.file);
    Config c = load(r.file);
    const auto& m = c.model;
    EXPECT_EQ(m.num_layers, r.layers);
    EXPECT_EQ(m.hidden_size, r.hidden);
    EXPECT_EQ(m.num_attention_heads, r.heads);
    EXPECT_EQ(m.seq_length, 2048);
    EXPECT_EQ(m.max_position_embeddings, 2048);
    EXPECT_EQ(m.pos_emb, "rotary");
    EXPECT_DOUBLE_EQ(m.rotary_pct, 0.25);
    EXPECT_EQ(m.rotary_dims(), static_cast<int>(m.head_size() / 4));
    EXPECT_TRUE(m.gpt_j_residual);
    EXPECT_TRUE(m.no_weight_tying);
    EXPECT_EQ(m.intermediate_size, 0);
    EXPECT_DOUBLE_EQ(c.optimizer.lr, r.lr);
    EXPECT_DOUBLE_EQ(c.optimizer.min_lr, r.lr / 10);  // "LR decaying to 0.1x" (model card)
    EXPECT_DOUBLE_EQ(c.optimizer.beta1, 0.9);
    EXPECT_DOUBLE_EQ(c.optimizer.beta2, 0.95);
    EXPECT_DOUBLE_EQ(c.optimizer.eps, 1e-8);
    EXPECT_DOUBLE_EQ(c.optimizer.weight_decay, 0.1);
    EXPECT_EQ(c.optimizer.lr_decay_style, "cosine");
    EXPECT_EQ(c.optimizer.lr_decay_iters, 143000);
    EXPECT_DOUBLE_EQ(c.optimizer.warmup, 0.01);
    EXPECT_DOUBLE_EQ(c.optimizer.gradient_clipping, 1.0);
    EXPECT_EQ(c.training.train_iters, 143000);
    EXPECT_EQ(c.training.checkpoint_factor, 1000);
    EXPECT_EQ(c.training.train_micro_batch_size_per_gpu, r.micro_batch);
    EXPECT_EQ(c.training.gradient_accumulation_steps, r.grad_accum);
    EXPECT_EQ(c.training.model_parallel_size, r.model_parallel);
    EXPECT_EQ(c.training.zero_stage, r.zero_stage);
    EXPECT_EQ(c.training.precision, "fp16");
    // The fp16 block: dynamic loss scaling from 2^12.
    EXPECT_DOUBLE_EQ(c.training.loss_scale, 0.0);
    EXPECT_EQ(c.training.initial_scale_power, 12);
    EXPECT_EQ(c.training.loss_scale_window, 1000);
    EXPECT_EQ(c.training.hysteresis, 2);
    EXPECT_DOUBLE_EQ(c.training.min_loss_scale, 1.0);
    EXPECT_EQ(c.training.checkpoint_activations, r.checkpoint_activations);
    EXPECT_EQ(c.training.checkpoint_num_layers, 1);
    // zero_optimization: buckets, overlap_comm, contiguous_gradients.
    EXPECT_EQ(c.training.zero_reduce_bucket_size, r.zero_bucket);
    EXPECT_EQ(c.training.zero_allgather_bucket_size, r.zero_bucket);
    EXPECT_TRUE(c.training.zero_overlap_comm);
    EXPECT_TRUE(c.training.zero_contiguous_gradients);
    EXPECT_EQ(c.training.save, "");
    EXPECT_EQ(c.training.load, "");
    // GPT-NeoX counts an eval iteration as gradient_accumulation_steps
    // micro-batches; neox counts micro-batches.
    EXPECT_EQ(c.training.eval_iters, 10 * r.grad_accum);
    EXPECT_EQ(c.plugins.data, "mmap");
  }
  // 6.9B and 12B set no init methods: GPT-NeoX's default "normal" for the input side.
  EXPECT_EQ(load("pythia/6-9B.toml").model.init_method, "normal");
  EXPECT_EQ(load("pythia/160M.toml").model.init_method, "small_init");
  EXPECT_EQ(load("pythia/160M.toml").model.output_layer_init_method, "wang_init");
  EXPECT_EQ(load("pythia/14M.toml").training.pipe_parallel_size, 0);
  EXPECT_EQ(load("pythia/160M.toml").training.eval_interval, 40000);
}

TEST(ConfigZoo, NeoxExampleHyperparameters) {
  // EleutherAI/gpt-neox configs/*.yml (commits in each file's header).
  Config c19 = load("neox/19M.toml");
  EXPECT_EQ(c19.model.num_layers, 6);
  EXPECT_EQ(c19.model.hidden_size, 512);
  EXPECT_FALSE(c19.model.gpt_j_residual);
  EXPECT_DOUBLE_EQ(c19.model.rotary_pct, 1.0);  // not set: GPT-NeoX's default
  EXPECT_DOUBLE_EQ(c19.optimizer.lr, 1e-3);
  EXPECT_EQ(c19.training.train_micro_batch_size_per_gpu, 4);
  EXPECT_EQ(c19.training.train_iters, 143000);

  Config c49 = load("neox/49M.toml");
  EXPECT_TRUE(c49.model.gpt_j_residual);
  EXPECT_DOUBLE_EQ(c49.model.rotary_pct, 0.25);
  EXPECT_DOUBLE_EQ(c49.optimizer.lr, 8e-4);
  EXPECT_DOUBLE_EQ(c49.optimizer.min_lr, 8e-5);

  Config c125 = load("neox/125M.toml");
  EXPECT_EQ(c125.model.num_layers, 12);
  EXPECT_EQ(c125.model.hidden_size, 768);
  EXPECT_DOUBLE_EQ(c125.optimizer.lr, 6e-4);
  EXPECT_EQ(c125.training.train_iters, 320000);
  EXPECT_EQ(c125.optimizer.lr_decay_iters, 320000);
  EXPECT_EQ(c125.training.checkpoint_factor, 10000);
  EXPECT_EQ(c125.training.keep_last_n_checkpoints, 4);
  EXPECT_EQ(c125.training.log_interval, 100);

  Config c760 = load("neox/760M.toml");
  EXPECT_DOUBLE_EQ(c760.optimizer.beta2, 0.999);  // the only example config with 0.999
  EXPECT_DOUBLE_EQ(c760.optimizer.lr, 2.5e-4);

  Config c13 = load("neox/13B.toml");
  EXPECT_EQ(c13.model.num_layers, 40);
  EXPECT_EQ(c13.model.hidden_size, 5120);
  EXPECT_DOUBLE_EQ(c13.optimizer.lr, 1e-4);

  Config c20 = load("neox/20B.toml");
  EXPECT_EQ(c20.model.num_layers, 44);
  EXPECT_EQ(c20.model.hidden_size, 6144);
  EXPECT_EQ(c20.model.num_attention_heads, 64);
  EXPECT_TRUE(c20.model.gpt_j_residual);
  EXPECT_DOUBLE_EQ(c20.model.rotary_pct, 0.25);
  EXPECT_DOUBLE_EQ(c20.optimizer.lr, 0.97e-4);
  EXPECT_DOUBLE_EQ(c20.optimizer.min_lr, 0.97e-5);
  EXPECT_DOUBLE_EQ(c20.optimizer.weight_decay, 0.01);
  EXPECT_EQ(c20.training.train_micro_batch_size_per_gpu, 4);
  EXPECT_EQ(c20.training.gradient_accumulation_steps, 32);
  EXPECT_EQ(c20.training.eval_iters, 10 * 32);
  EXPECT_EQ(c20.training.train_iters, 150000);
  EXPECT_EQ(c20.training.checkpoint_factor, 500);
  EXPECT_EQ(c20.training.pipe_parallel_size, 4);
  EXPECT_EQ(c20.training.zero_reduce_bucket_size, 1'260'000'000);
  EXPECT_EQ(c20.training.zero_allgather_bucket_size, 1'260'000'000);
  EXPECT_EQ(c20.training.initial_scale_power, 12);

  for (const char* n : kNeoxNames) {
    SCOPED_TRACE(n);
    Config c = load("neox/" + std::string(n) + ".toml");
    EXPECT_EQ(c.model.seq_length, 2048);
    EXPECT_EQ(c.model.pos_emb, "rotary");
    EXPECT_TRUE(c.model.no_weight_tying);
    EXPECT_EQ(c.model.init_method, "small_init");
    EXPECT_EQ(c.model.output_layer_init_method, "wang_init");
    EXPECT_EQ(c.optimizer.lr_decay_style, "cosine");
    EXPECT_DOUBLE_EQ(c.optimizer.warmup, 0.01);
    EXPECT_DOUBLE_EQ(c.optimizer.min_lr * 10, c.optimizer.lr);
    EXPECT_EQ(c.optimizer.lr_decay_iters, c.training.train_iters);
    EXPECT_EQ(c.training.precision, "fp16");
    EXPECT_EQ(c.training.zero_stage, 1);
    // The fp16 block. initial_scale_power is set (12) in 19M, 49M and 20B only;
    // the others leave it to DeepSpeed, and neox's default is 16.
    const std::string name(n);
    const bool sets_scale_power = name == "19M" || name == "49M" || name == "20B";
    EXPECT_DOUBLE_EQ(c.training.loss_scale, 0.0);
    EXPECT_EQ(c.training.initial_scale_power, sets_scale_power ? 12 : 16);
    EXPECT_EQ(c.training.loss_scale_window, 1000);
    EXPECT_EQ(c.training.hysteresis, 2);
    EXPECT_DOUBLE_EQ(c.training.min_loss_scale, 1.0);
    EXPECT_TRUE(c.training.checkpoint_activations);
    EXPECT_EQ(c.training.checkpoint_num_layers, 1);
    const std::int64_t bucket = name == "20B" ? 1'260'000'000 : 500'000'000;
    EXPECT_EQ(c.training.zero_reduce_bucket_size, bucket);
    EXPECT_EQ(c.training.zero_allgather_bucket_size, bucket);
    EXPECT_TRUE(c.training.zero_overlap_comm);
    EXPECT_TRUE(c.training.zero_contiguous_gradients);
    // zero_stage 1 trains with the zero plugin, which gets the original's buckets.
    EXPECT_EQ(neox::optimizer_plugin(c), "zero");
    const neox::OptimizerContext o = neox::optimizer_context(c);
    EXPECT_EQ(o.type, "adamw");
    EXPECT_EQ(o.zero_stage, 1);
    EXPECT_EQ(o.zero_reduce_bucket_size, bucket);
    EXPECT_EQ(o.zero_allgather_bucket_size, bucket);
    EXPECT_TRUE(o.zero_overlap_comm);
    EXPECT_TRUE(o.zero_contiguous_gradients);
  }
}

// ---------------------------------------------------------------------------
// Headers

// The lines of the leading comment block.
std::string header_of(const std::string& text) {
  std::istringstream in(text);
  std::string line, out;
  while (std::getline(in, line) && (line.empty() || line[0] == '#')) out += line + "\n";
  return out;
}

// "--set a=b" arguments of the header's "To run on the CPU" line(s).
std::vector<std::string> cpu_overrides(const std::string& header) {
  std::vector<std::string> out;
  std::regex set_re("--set ([a-z_.]+=[a-z0-9]+)");
  for (std::sregex_iterator it(header.begin(), header.end(), set_re), end; it != end; ++it) out.push_back((*it)[1]);
  return out;
}

TEST(ConfigZoo, HeadersNameSourceCommitAndParameterCount) {
  std::vector<fs::path> files = toml_files(kConfigs / "neox");
  auto py = toml_files(kConfigs / "pythia");
  files.insert(files.end(), py.begin(), py.end());
  const std::regex source_re("# Source: +EleutherAI/(gpt-neox|pythia) [^ \n]+\\.yml\n#  +@ [0-9a-f]{40}\n");
  for (auto& p : files) {
    SCOPED_TRACE(p.string());
    const std::string text = read_text(p);
    ASSERT_EQ(text.rfind("# SPDX-License-Identifier: Apache-2.0\n", 0), 0u);
    const std::string header = header_of(text);
    EXPECT_TRUE(std::regex_search(header, source_re)) << header;
    Config c = neox::load_config(p.string());
    EXPECT_NE(header.find("# Parameters:  " + with_commas(c.model.num_parameters()) + " "), std::string::npos)
        << "header count differs from num_parameters() = " << c.model.num_parameters();
    EXPECT_NE(header.find("GPT-NeoX settings not carried over:"), std::string::npos);
  }
}

TEST(ConfigZoo, HeaderCpuOverridesMakeTheRunAcceptable) {
  std::vector<fs::path> files = toml_files(kConfigs / "neox");
  auto py = toml_files(kConfigs / "pythia");
  files.insert(files.end(), py.begin(), py.end());
  for (auto& p : files) {
    SCOPED_TRACE(p.string());
    const auto sets = cpu_overrides(header_of(read_text(p)));
    ASSERT_FALSE(sets.empty());
    EXPECT_EQ(sets[0], "training.precision=fp32");
    const Config original = neox::load_config(p.string());
    Config c = neox::load_config(p.string(), sets);
    // One process on the CPU: fp32 (fp16 would be emulated through f32, slowly),
    // no tensor or pipeline parallelism (refused by neox train). ZeRO stays as in
    // the original: one process has nothing to partition.
    EXPECT_EQ(c.training.precision, "fp32");
    EXPECT_LE(c.training.model_parallel_size, 1);
    EXPECT_LE(c.training.pipe_parallel_size, 1);
    EXPECT_EQ(c.training.zero_stage, original.training.zero_stage);
    EXPECT_NO_THROW(neox::optimizer_plugin(c));
    // Only what has to change is overridden.
    for (const auto& s : sets)
      EXPECT_TRUE(s == "training.precision=fp32" || s == "training.model_parallel_size=1" ||
                  s == "training.pipe_parallel_size=1")
          << s;
    EXPECT_EQ(original.training.model_parallel_size > 1,
              std::count(sets.begin(), sets.end(), "training.model_parallel_size=1") == 1);
    EXPECT_EQ(original.training.pipe_parallel_size > 1,
              std::count(sets.begin(), sets.end(), "training.pipe_parallel_size=1") == 1);
    // Everything else is unchanged: the model (the padding does not depend on
    // model_parallel_size here), loss scaling, checkpointing and ZeRO settings.
    EXPECT_EQ(c.model.num_parameters(), original.model.num_parameters());
    EXPECT_EQ(c.training.initial_scale_power, original.training.initial_scale_power);
    EXPECT_EQ(c.training.checkpoint_activations, original.training.checkpoint_activations);
    EXPECT_EQ(c.training.zero_reduce_bucket_size, original.training.zero_reduce_bucket_size);
  }
}

// What neox supports now (fp16 with loss scaling, ZeRO, activation checkpointing,
// data parallelism over comm "mpi"/"nccl") is carried, not described as refused
// or missing; what it still refuses (tensor and pipeline parallelism) is.
TEST(ConfigZoo, HeadersMakeNoStaleClaims) {
  std::vector<fs::path> files = toml_files(kConfigs / "neox");
  auto py = toml_files(kConfigs / "pythia");
  files.insert(files.end(), py.begin(), py.end());
  for (auto& p : files) {
    SCOPED_TRACE(p.string());
    const std::string text = read_text(p);
    const std::string header = header_of(text);
    for (const char* stale : {"today", "activation checkpointing is not implemented", "only `enabled` is kept",
                              "DeepSpeed ZeRO communication tuning", "not applicable (comm plugin",
                              "training.zero_stage=0", "neox runs one process"})
      EXPECT_EQ(text.find(stale), std::string::npos) << stale;
    Config c = neox::load_config(p.string());
    const bool refuses = c.training.model_parallel_size > 1 || c.training.pipe_parallel_size > 1;
    EXPECT_EQ(header.find("neox train refuses") != std::string::npos, refuses);
    if (c.training.model_parallel_size > 1) {
      EXPECT_NE(header.find("refuses model_parallel_size " + std::to_string(c.training.model_parallel_size)),
                std::string::npos);
    }
    if (c.training.pipe_parallel_size > 1) {
      EXPECT_NE(header.find("pipe_parallel_size " + std::to_string(c.training.pipe_parallel_size) + " ("),
                std::string::npos);
    }
    // Carried keys are set in the file itself, not left to the defaults.
    for (const char* key : {"loss_scale = ", "loss_scale_window = ", "hysteresis = ", "min_loss_scale = ",
                            "checkpoint_activations = ", "checkpoint_num_layers = ", "zero_reduce_bucket_size = ",
                            "zero_allgather_bucket_size = ", "zero_overlap_comm = ", "zero_contiguous_gradients = "})
      EXPECT_NE(text.find("\n" + std::string(key)), std::string::npos) << key;
  }
}

}  // namespace
