// SPDX-License-Identifier: Apache-2.0
// Mixed precision and activation checkpointing on the CPU backend (the GPU
// versions are in test_gpu_model.cpp): the fp16 loss scaler's DeepSpeed
// semantics, recomputation giving the same gradients with less memory, the
// Hugging Face oracle in bf16. Training in bf16 and fp16:
// tests/train/test_mixed_precision_training.cpp.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "neox/backend.h"
#include "neox/io/hf.h"
#include "neox/io/safetensors.h"
#include "neox/model/gpt_neox.h"
#include "neox/registry.h"
#include "neox/train/loss_scaler.h"
#include "test_support.h"

namespace fs = std::filesystem;
using neox::DType;
using neox::Tensor;

namespace {

// ---------------------------------------------------------------- the loss scaler

TEST(LossScaler, DynamicScalingFollowsDeepSpeed) {
  // 2^4 = 16 at first, doubling after 3 clean steps, halving on the second
  // overflow in a row (hysteresis 2), then on every overflow until clean.
  neox::LossScaler s({0.0, 4, 3, 2, 1.0});
  EXPECT_TRUE(s.dynamic());
  const bool overflow[] = {true, true, false, false, false, true, true, true, false};
  const double want[] = {16, 8, 8, 8, 16, 16, 8, 4, 4};
  for (int i = 0; i < 9; ++i) {
    s.update(overflow[i]);
    EXPECT_EQ(s.scale(), want[i]) << "after step " << i;
  }
}

TEST(LossScaler, NeverBelowTheMinimumAndStaticNeverMoves) {
  neox::LossScaler s({0.0, 3, 1000, 1, 2.0});
  for (int i = 0; i < 10; ++i) s.update(true);
  EXPECT_EQ(s.scale(), 2.0);
  neox::LossScaler fixed({128.0, 16, 2, 2, 1.0});
  EXPECT_FALSE(fixed.dynamic());
  for (int i = 0; i < 10; ++i) fixed.update(i % 3 == 0);
  EXPECT_EQ(fixed.scale(), 128.0);
}

TEST(LossScaler, StateRoundTripContinuesTheSameSequence) {
  neox::LossScaler a({0.0, 10, 4, 2, 1.0}), b({0.0, 10, 4, 2, 1.0});
  std::mt19937 rng(7);
  for (int i = 0; i < 11; ++i) a.update(rng() % 3 == 0);
  b.load_state(a.state());
  for (int i = 0; i < 30; ++i) {
    const bool o = rng() % 4 == 0;
    a.update(o);
    b.update(o);
    ASSERT_EQ(a.scale(), b.scale()) << "step " << i;
  }
  EXPECT_THROW(neox::LossScaler({0.0, 10, 0, 2, 1.0}), neox::Error);
}

// ---------------------------------------------------------------- helpers

std::shared_ptr<neox::Backend> cpu() {
  static neox::PluginRegistry registry({neox::test::build_plugin_dir()});
  static auto backend = registry.make_backend("cpu", {}, {});
  return backend;
}

neox::ModelConfig small_model(bool parallel) {
  neox::ModelConfig m;
  m.num_layers = 4;
  m.hidden_size = 32;
  m.num_attention_heads = 4;
  m.vocab_size = 100;
  m.make_vocab_size_divisible_by = 8;
  m.seq_length = 12;
  m.max_position_embeddings = 12;
  m.rotary_pct = 0.5;
  m.gpt_j_residual = parallel;
  return m;
}

Tensor random_tokens(std::int64_t B, std::int64_t T, int V, unsigned seed) {
  Tensor t = Tensor::zeros_host({B, T}, DType::i64);
  std::mt19937 rng(seed);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.ptr<std::int64_t>()[i] = static_cast<std::int64_t>(rng() % V);
  return t;
}

std::vector<float> host_f32(neox::Backend& be, const Tensor& t) {
  Tensor h = be.to_host(t);
  std::vector<float> out(static_cast<std::size_t>(h.numel()));
  for (std::int64_t i = 0; i < h.numel(); ++i)
    out[static_cast<std::size_t>(i)] = h.dtype() == DType::f32    ? h.ptr<float>()[i]
                                       : h.dtype() == DType::bf16 ? neox::bf16_to_float(h.ptr<std::uint16_t>()[i])
                                                                  : neox::f16_to_float(h.ptr<std::uint16_t>()[i]);
  return out;
}

// ||a - b|| / ||b||.
template <typename A, typename B>
double rel_error(const A& a, const B& b) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < b.size(); ++i) {
    const double d = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    num += d * d;
    den += static_cast<double>(b[i]) * static_cast<double>(b[i]);
  }
  return std::isnan(num) ? INFINITY : std::sqrt(num / den);
}

// ---------------------------------------------------------------- activation checkpointing

struct StepResult {
  double loss;
  std::vector<float> grads;
  std::size_t activation_bytes;
  std::size_t peak_bytes;
};

StepResult one_step(const neox::ModelConfig& cfg, neox::ComputeOptions compute) {
  auto be = cpu();
  neox::GPTNeoX model(cfg, be, compute);
  model.initialize(99);
  Tensor ids = random_tokens(3, cfg.seq_length, static_cast<int>(cfg.vocab_size), 1);
  Tensor labels = random_tokens(3, cfg.seq_length, static_cast<int>(cfg.vocab_size), 2);
  be->reset_peak_memory();
  const std::size_t before = be->memory_stats().in_use;
  StepResult r;
  r.loss = model.forward_loss(ids, labels);
  model.backward();
  r.grads = host_f32(*be, model.arena().grads());
  r.activation_bytes = model.activation_bytes();
  r.peak_bytes = be->memory_stats().peak_in_use - before;
  return r;
}

class ActivationCheckpointing : public ::testing::TestWithParam<bool> {};

TEST_P(ActivationCheckpointing, RecomputationGivesTheSameGradientsWithLessMemory) {
  const neox::ModelConfig cfg = small_model(GetParam());
  const StepResult plain = one_step(cfg, {});
  for (std::int64_t chunk : {1, 2, 3, 4, 9}) {
    SCOPED_TRACE("checkpoint_num_layers = " + std::to_string(chunk));
    const StepResult ckpt = one_step(cfg, {DType::f32, true, chunk});
    // The same kernels on the same inputs in the same order: identical up to
    // nothing but the order of OpenMP reductions, which is fixed here.
    EXPECT_EQ(ckpt.loss, plain.loss);
    EXPECT_LE(rel_error(ckpt.grads, plain.grads), 1e-6);
    EXPECT_GT(rel_error(plain.grads, std::vector<float>(plain.grads.size(), 0.0f)), 0.5);  // not all zero
    if (chunk < cfg.num_layers) {
      EXPECT_LT(ckpt.activation_bytes, plain.activation_bytes);
      if (plain.peak_bytes > 0) {
        EXPECT_LT(ckpt.peak_bytes, plain.peak_bytes);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Residual, ActivationCheckpointing, ::testing::Values(true, false),
                         [](const auto& info) { return info.param ? "parallel" : "sequential"; });

TEST(ActivationCheckpointing, SavesOneBlocksActivationsPerBlockNotKept) {
  neox::ModelConfig cfg = small_model(true);
  cfg.num_layers = 6;
  auto be = cpu();
  neox::GPTNeoX plain(cfg, be), ckpt(cfg, be, {DType::f32, true, 1});
  Tensor ids = random_tokens(2, cfg.seq_length, 100, 3);
  plain.forward(ids);
  ckpt.forward(ids);
  const std::int64_t N = 2 * cfg.seq_length, C = cfg.hidden_size, F = cfg.ffn_size(), H = cfg.num_attention_heads;
  // A parallel block keeps ln1, qkv, attn, proj, ln2, mlp [N,C] (3C for qkv),
  // fc and act [N,F], four [N] statistics and lse [H,N].
  const std::size_t block = 4 * (N * C * 6 + N * C * 2 + 2 * N * F + 4 * N + H * N) / 1;
  const std::size_t saved = plain.activation_bytes() - ckpt.activation_bytes();
  // Five blocks' buffers fewer, one [N,C] recompute buffer more.
  EXPECT_EQ(saved, 5 * block - static_cast<std::size_t>(4 * N * C));
}

// ---------------------------------------------------------------- bf16 against the oracle

const std::string kHfDir = neox::test::testdata_dir() + "/hf/";

class Bf16Oracle : public ::testing::TestWithParam<std::string> {};

TEST_P(Bf16Oracle, LogitsLossAndGradientsWithinBf16Tolerance) {
  const std::string dir = kHfDir + GetParam() + "/hf";
  auto be = cpu();
  neox::GPTNeoX model(neox::read_hf_config(dir), be, {DType::bf16});
  neox::load_hf_weights(model, dir);
  auto fwd = neox::SafeTensorsFile::open(kHfDir + GetParam() + "/forward.safetensors");
  std::ifstream in(kHfDir + GetParam() + "/expected.json");
  const double ref_loss = nlohmann::json::parse(in)["loss"].get<double>();
  const double loss = model.forward_loss(fwd.read("input_ids", DType::i64), fwd.read("labels", DType::i64));
  EXPECT_EQ(model.logits().dtype(), DType::bf16);
  EXPECT_LT(std::abs(loss - ref_loss) / ref_loss, 2e-2);
  Tensor ref = fwd.read("logits", DType::f64);
  const auto logits = host_f32(*be, model.logits());
  const std::vector<double> ref_logits(ref.ptr<double>(), ref.ptr<double>() + ref.numel());
  const double err = rel_error(logits, ref_logits);
  EXPECT_LT(err, 2e-2) << "logits";
  EXPECT_GT(err, 1e-5) << "logits in bf16 cannot be this exact: is bf16 really in use?";

  model.backward();
  auto grads = neox::SafeTensorsFile::open(kHfDir + GetParam() + "/grads.safetensors");
  const auto& arena = model.arena();
  const auto& cfg = model.config();
  std::vector<double> all_got, all_ref;
  for (std::size_t i = 0; i < arena.specs().size(); ++i) {
    const auto& spec = arena.specs()[i];
    std::string name = spec.name;
    if (name == "embed_out.weight" && !grads.contains(name)) name = "lm_head.weight";
    Tensor r = grads.read(name, DType::f64);
    std::vector<float> g = host_f32(*be, arena.grad(static_cast<int>(i)));
    if (spec.name.find("query_key_value") != std::string::npos) {
      std::vector<float> hf(g.size());
      neox::qkv_to_hf(hf.data(), g.data(), static_cast<int>(cfg.num_attention_heads), static_cast<int>(cfg.head_size()),
                      spec.shape.size() == 2 ? static_cast<long>(spec.shape[1]) : 1);
      g = hf;
    }
    all_got.insert(all_got.end(), g.begin(), g.end());
    all_ref.insert(all_ref.end(), r.ptr<double>(), r.ptr<double>() + r.numel());
  }
  EXPECT_LT(rel_error(all_got, all_ref), 2e-2) << "all gradients together";
}

INSTANTIATE_TEST_SUITE_P(Cases, Bf16Oracle, ::testing::Values("neox_tiny_parallel", "neox_tiny_sequential"));

}  // namespace
