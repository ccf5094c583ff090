// SPDX-License-Identifier: Apache-2.0
// Generation: the model's key/value cache path (forward_cached) against the
// training forward, GPT-NeoX's sampling rules on hand-made logits, the
// generation loop against Hugging Face's greedy continuations
// (../shared/testdata/hf/*/expected.json). `neox generate`:
// tests/cli/test_generate_command.cpp.
#include <gtest/gtest.h>

#include "test_support.h"

#include <sys/wait.h>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "neox/backend.h"
#include "neox/error.h"
#include "neox/io/hf.h"
#include "neox/io/safetensors.h"
#include "neox/model/generation.h"
#include "neox/model/gpt_neox.h"
#include "neox/registry.h"

namespace {

using neox::DType;
using neox::Tensor;
using Ids = std::vector<std::int32_t>;

const std::string kHf = neox::test::testdata_dir() + "/hf/";
constexpr double kInf = std::numeric_limits<double>::infinity();

std::shared_ptr<neox::Backend> cpu_backend() {
  static neox::PluginRegistry registry({neox::test::build_plugin_dir()});
  static std::shared_ptr<neox::Backend> backend = registry.make_backend("cpu", {}, {});
  return backend;
}

std::unique_ptr<neox::GPTNeoX> load_hf(const std::string& name) {
  const std::string dir = kHf + name + "/hf";
  auto model = std::make_unique<neox::GPTNeoX>(neox::read_hf_config(dir), cpu_backend());
  neox::load_hf_weights(*model, dir);
  return model;
}

using Greedy = neox::test::GreedyCase;
Greedy greedy_case(const std::string& name) { return neox::test::hf_greedy_case(name); }

std::vector<float> host_floats(neox::Backend& be, const Tensor& t) {
  Tensor h = be.to_host(t);
  return std::vector<float>(h.ptr<float>(), h.ptr<float>() + h.numel());
}

double rel_err(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    const double d = static_cast<double>(got[i]) - want[i];
    num += d * d;
    den += static_cast<double>(want[i]) * want[i];
  }
  return std::sqrt(num / den);
}

void expect_error(const std::function<void()>& fn, const std::string& fragment) {
  try {
    fn();
    ADD_FAILURE() << "expected neox::Error containing '" << fragment << "'";
  } catch (const neox::Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

// Columns [t0, t0 + n) of ids [B, T] as an i32 host tensor [B, n] (owning).
struct Chunk {
  Ids data;
  Tensor tensor;
};
Chunk chunk(const Ids& ids, std::int64_t B, std::int64_t T, std::int64_t t0, std::int64_t n) {
  Chunk c;
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < n; ++t) c.data.push_back(ids[static_cast<std::size_t>(b * T + t0 + t)]);
  c.tensor = Tensor::wrap(c.data.data(), {B, n}, DType::i32);
  return c;
}

// ---------------------------------------------------------------- forward_cached

// Small random models covering what the HF cases do not: learned positions,
// no position embedding, tied embeddings, a padded vocabulary.
neox::ModelConfig small_config(const std::string& pos_emb, bool parallel, bool tied) {
  neox::ModelConfig c;
  c.num_layers = 2;
  c.hidden_size = 32;
  c.num_attention_heads = 4;
  c.vocab_size = 50;
  c.make_vocab_size_divisible_by = 16;  // padded to 64
  c.seq_length = 32;
  c.max_position_embeddings = 32;
  c.pos_emb = pos_emb;
  c.rotary_pct = 0.5;
  c.gpt_j_residual = parallel;
  c.no_weight_tying = !tied;
  c.init_method_std = 0.2;  // large weights: logits that differ visibly
  return c;
}

// forward_cached over [B, T] in chunks equals forward() (relative 1e-6),
// with and without last_only.
void check_chunks_equal_forward(neox::GPTNeoX& model, std::uint32_t seed) {
  const std::int64_t B = 2, T = 20, V = model.config().padded_vocab_size();
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> tok(0, static_cast<int>(model.config().vocab_size) - 1);
  Ids ids(static_cast<std::size_t>(B * T));
  for (auto& x : ids) x = tok(rng);
  auto& be = model.backend();
  std::vector<float> want = host_floats(be, model.forward(Tensor::wrap(ids.data(), {B, T}, DType::i32)));

  neox::InferenceCache cache = model.make_cache(B, T);
  neox::InferenceCache last = model.make_cache(B, T);
  std::vector<float> got(want.size());
  std::int64_t t0 = 0;
  for (std::int64_t n : {7, 1, 1, 6, 5}) {
    SCOPED_TRACE("chunk at " + std::to_string(t0) + " of " + std::to_string(n));
    Chunk c = chunk(ids, B, T, t0, n);
    EXPECT_EQ(cache.length(), t0);
    std::vector<float> out = host_floats(be, model.forward_cached(c.tensor, cache));
    ASSERT_EQ(out.size(), static_cast<std::size_t>(B * n * V));
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t t = 0; t < n; ++t)
        std::copy_n(out.begin() + (b * n + t) * V, V, got.begin() + (b * T + t0 + t) * V);
    Tensor lo = model.forward_cached(c.tensor, last, true);
    ASSERT_EQ(lo.shape(), (neox::Shape{B, 1, V}));
    std::vector<float> lv = host_floats(be, lo), wv;
    for (std::int64_t b = 0; b < B; ++b)
      wv.insert(wv.end(), want.begin() + (b * T + t0 + n - 1) * V, want.begin() + (b * T + t0 + n) * V);
    EXPECT_LT(rel_err(lv, wv), 1e-6) << "last_only";
    t0 += n;
  }
  EXPECT_EQ(cache.length(), T);
  EXPECT_LT(rel_err(got, want), 1e-6);
}

class GenerationHf : public ::testing::TestWithParam<std::string> {};

TEST_P(GenerationHf, ForwardCachedInChunksEqualsForward) {
  auto model = load_hf(GetParam());
  check_chunks_equal_forward(*model, 11);
}

TEST(GenerationCache, ForwardCachedInChunksEqualsForwardForEveryPositionEmbedding) {
  struct Case {
    const char* pos_emb;
    bool parallel, tied;
  };
  for (Case c : {Case{"learned", false, true}, Case{"none", true, false}, Case{"rotary", false, true}}) {
    SCOPED_TRACE(std::string(c.pos_emb) + (c.parallel ? " parallel" : " sequential") + (c.tied ? " tied" : ""));
    neox::GPTNeoX model(small_config(c.pos_emb, c.parallel, c.tied), cpu_backend());
    model.initialize(5);
    check_chunks_equal_forward(model, 3);
  }
}

TEST(GenerationCache, LeavesTrainingActivationsAlone) {
  auto model = load_hf("neox_tiny_sequential");
  auto fwd = neox::SafeTensorsFile::open(kHf + "neox_tiny_sequential/forward.safetensors");
  Tensor ids = fwd.read("input_ids", DType::i64), labels = fwd.read("labels", DType::i64);
  auto& be = model->backend();
  const double loss = model->forward_loss(ids, labels);
  std::vector<float> logits = host_floats(be, model->logits());

  neox::InferenceCache cache = model->make_cache(1, 8);
  Ids prompt = {1, 2, 3};
  model->forward_cached(Tensor::wrap(prompt.data(), {1, 3}, DType::i32), cache);
  EXPECT_EQ(host_floats(be, model->logits()), logits);  // bit for bit

  // backward of the forward_loss before the cached forward still works
  model->arena().zero_grads(be);
  model->backward();
  std::vector<float> grads = host_floats(be, model->arena().grads());
  model->arena().zero_grads(be);
  EXPECT_EQ(model->forward_loss(ids, labels), loss);
  model->backward();
  EXPECT_EQ(host_floats(be, model->arena().grads()), grads);
}

TEST(GenerationCache, ChecksItsLimits) {
  auto model = load_hf("neox_tiny_parallel");
  neox::InferenceCache cache = model->make_cache(2, 4);
  EXPECT_EQ(cache.batch(), 2);
  EXPECT_EQ(cache.max_tokens(), 4);
  Ids three = {1, 2, 3, 4, 5, 6};
  Tensor t3 = Tensor::wrap(three.data(), {2, 3}, DType::i32);
  model->forward_cached(t3, cache);
  expect_error([&] { model->forward_cached(t3, cache); }, "3 tokens at position 3 exceed the cache's max_tokens 4");
  EXPECT_EQ(cache.length(), 3);  // a refused call changes nothing
  expect_error(
      [&] {
        model->forward_cached(Tensor::wrap(three.data(), {3, 2}, DType::i32), cache);
      },
      "the cache holds 2 sequences");
  Ids bad = {1, 9999};
  expect_error(
      [&] {
        model->forward_cached(Tensor::wrap(bad.data(), {2, 1}, DType::i32), cache);
      },
      "outside the vocabulary");
  cache.reset();
  EXPECT_EQ(cache.length(), 0);
  model->forward_cached(t3, cache);  // usable again

  auto other = load_hf("neox_tiny_parallel");
  expect_error([&] { other->forward_cached(t3, cache); }, "another model");
  neox::InferenceCache empty;
  expect_error([&] { model->forward_cached(t3, empty); }, "empty cache");

  neox::GPTNeoX learned(small_config("learned", false, false), cpu_backend());
  expect_error([&] { learned.make_cache(1, 33); }, "max_position_embeddings");
}

// ---------------------------------------------------------------- greedy against Hugging Face

TEST_P(GenerationHf, GreedyGivesTheReferenceContinuation) {
  auto model = load_hf(GetParam());
  Greedy g = greedy_case(GetParam());
  neox::GenerationSettings s;
  s.greedy = true;
  s.max_new_tokens = static_cast<std::int64_t>(g.continuation.size());
  Ids streamed;
  auto out = neox::generate(*model, {g.prompt}, s, [&](std::size_t seq, std::int32_t tok) {
    EXPECT_EQ(seq, 0u);
    streamed.push_back(tok);
  });
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].tokens, g.continuation);
  EXPECT_EQ(streamed, g.continuation);
  EXPECT_FALSE(out[0].finished);

  // temperature 0 is greedy too, and top-k 1 samples only the arg-max
  neox::GenerationSettings t0 = s;
  t0.greedy = false;
  t0.temperature = 0.0;
  EXPECT_EQ(neox::generate(*model, {g.prompt}, t0)[0].tokens, g.continuation);
  neox::GenerationSettings k1 = t0;
  k1.temperature = 0.7;
  k1.top_k = 1;
  EXPECT_EQ(neox::generate(*model, {g.prompt}, k1)[0].tokens, g.continuation);
}

TEST_P(GenerationHf, PromptsOfDifferentLengthsInOneBatch) {
  auto model = load_hf(GetParam());
  Greedy g = greedy_case(GetParam());
  neox::GenerationSettings s;
  s.greedy = true;
  s.max_new_tokens = 12;
  Ids shorter(g.prompt.begin(), g.prompt.begin() + 2);
  Ids alone = neox::generate(*model, {shorter}, s)[0].tokens;
  auto batch = neox::generate(*model, {g.prompt, shorter, g.prompt}, s);
  ASSERT_EQ(batch.size(), 3u);
  EXPECT_EQ(batch[0].tokens, g.continuation);
  EXPECT_EQ(batch[1].tokens, alone);
  EXPECT_EQ(batch[2].tokens, g.continuation);
}

TEST_P(GenerationHf, StopsAtTheEndOfDocumentToken) {
  auto model = load_hf(GetParam());
  Greedy g = greedy_case(GetParam());
  neox::GenerationSettings s;
  s.greedy = true;
  s.max_new_tokens = 12;
  s.eod_id = g.continuation[3];  // the 4th new token, not among the first three
  for (int i = 0; i < 3; ++i) ASSERT_NE(g.continuation[static_cast<std::size_t>(i)], s.eod_id);
  Ids streamed;
  auto out = neox::generate(*model, {g.prompt, g.prompt}, s, [&](std::size_t seq, std::int32_t tok) {
    if (seq == 1) streamed.push_back(tok);
  });
  for (const auto& r : out) {
    EXPECT_EQ(r.tokens, Ids(g.continuation.begin(), g.continuation.begin() + 3));  // the stop token is left out
    EXPECT_TRUE(r.finished);
  }
  EXPECT_EQ(streamed, out[1].tokens);
}

TEST_P(GenerationHf, StopsAtMaxLengthAndRefusesFullPrompts) {
  auto model = load_hf(GetParam());
  Greedy g = greedy_case(GetParam());
  neox::GenerationSettings s;
  s.greedy = true;
  s.max_new_tokens = 12;
  s.max_length = static_cast<std::int64_t>(g.prompt.size()) + 4;
  auto out = neox::generate(*model, {g.prompt}, s);
  EXPECT_EQ(out[0].tokens, Ids(g.continuation.begin(), g.continuation.begin() + 4));
  EXPECT_FALSE(out[0].finished);
  s.max_length = static_cast<std::int64_t>(g.prompt.size());
  expect_error([&] { neox::generate(*model, {g.prompt}, s); }, "leaves no room");
  s.max_length = 0;
  expect_error([&] { neox::generate(*model, {Ids{}}, s); }, "is empty");
  expect_error([&] { neox::generate(*model, {Ids{1, 100000}}, s); }, "outside the vocabulary");
  s.max_new_tokens = 0;
  EXPECT_TRUE(neox::generate(*model, {g.prompt}, s)[0].tokens.empty());
}

TEST_P(GenerationHf, TheSameSeedGivesTheSameSamples) {
  auto model = load_hf(GetParam());
  Greedy g = greedy_case(GetParam());
  neox::GenerationSettings s;
  s.max_new_tokens = 16;
  s.temperature = 1.5;  // a random model at high temperature: many likely tokens
  s.top_p = 0.95;
  s.seed = 7;
  auto a = neox::generate(*model, {g.prompt, g.prompt}, s);
  auto b = neox::generate(*model, {g.prompt, g.prompt}, s);
  EXPECT_EQ(a[0].tokens, b[0].tokens);
  EXPECT_EQ(a[1].tokens, b[1].tokens);
  EXPECT_NE(a[0].tokens, a[1].tokens);  // each sequence has its own generator
  EXPECT_NE(a[0].tokens, g.continuation);
  s.seed = 8;
  EXPECT_NE(neox::generate(*model, {g.prompt}, s)[0].tokens, a[0].tokens);
  for (auto t : a[0].tokens) EXPECT_LT(t, model->config().vocab_size);
}

INSTANTIATE_TEST_SUITE_P(Cases, GenerationHf, ::testing::Values("neox_tiny_parallel", "neox_tiny_sequential"));

// ---------------------------------------------------------------- sampling rules

TEST(GenerationSampling, TopKKeepsTheKLargestAndTheirTies) {
  std::vector<double> x = {1, 3, 2, 3, 0};
  neox::filter_logits(x, 2, 0.0);
  EXPECT_EQ(x, (std::vector<double>{-kInf, 3, -kInf, 3, -kInf}));
  x = {1, 3, 2, 3, 0};
  neox::filter_logits(x, 3, 0.0);
  EXPECT_EQ(x, (std::vector<double>{-kInf, 3, 2, 3, -kInf}));
  x = {1, 3, 2};
  neox::filter_logits(x, 10, 0.0);  // k beyond the vocabulary keeps everything
  EXPECT_EQ(x, (std::vector<double>{1, 3, 2}));
}

TEST(GenerationSampling, TopPKeepsTheFirstTokenAboveTheThreshold) {
  // probabilities 0.05, 0.5, 0.15, 0.3 (sorted: 0.5, 0.3, 0.15, 0.05;
  // cumulative 0.5, 0.8, 0.95, 1.0)
  const std::vector<double> logits = {std::log(0.05), std::log(0.5), std::log(0.15), std::log(0.3)};
  auto kept = [&](double p) {
    std::vector<double> x = logits;
    neox::filter_logits(x, 0, p);
    std::vector<int> k;
    for (int i = 0; i < 4; ++i) k.push_back(x[static_cast<std::size_t>(i)] > -kInf ? 1 : 0);
    return k;
  };
  EXPECT_EQ(kept(0.3), (std::vector<int>{0, 1, 0, 0}));   // 0.5 crosses 0.3 and is kept
  EXPECT_EQ(kept(0.6), (std::vector<int>{0, 1, 0, 1}));   // 0.5 + 0.3 crosses 0.6
  EXPECT_EQ(kept(0.85), (std::vector<int>{0, 1, 1, 1}));  // + 0.15 crosses 0.85
  EXPECT_EQ(kept(0.99), (std::vector<int>{1, 1, 1, 1}));
  EXPECT_EQ(kept(1e-9), (std::vector<int>{0, 1, 0, 0}));  // the most likely always stays
  // kept entries keep their logits
  std::vector<double> x = logits;
  neox::filter_logits(x, 0, 0.6);
  EXPECT_EQ(x[1], logits[1]);
  EXPECT_EQ(x[3], logits[3]);
}

TEST(GenerationSampling, TopKThenTopPOverWhatIsLeft) {
  // top-k 2 leaves 0.5 and 0.3, renormalised 0.625 and 0.375: top-p 0.6 then
  // keeps only the first (0.625 > 0.6), where without top-k it keeps both.
  std::vector<double> x = {std::log(0.05), std::log(0.5), std::log(0.15), std::log(0.3)};
  neox::filter_logits(x, 2, 0.6);
  EXPECT_GT(x[1], -kInf);
  EXPECT_EQ(x[0], -kInf);
  EXPECT_EQ(x[2], -kInf);
  EXPECT_EQ(x[3], -kInf);
}

TEST(GenerationSampling, PaddedVocabularyIsNeverChosen) {
  // 5 real tokens, 3 padding entries with the largest logits
  const std::vector<float> row = {0.5f, 2.0f, 1.0f, -1.0f, 0.0f, 50.0f, 60.0f, 70.0f};
  neox::GenerationSettings s;
  auto p = neox::sampling_probabilities(row.data(), 8, 5, s);
  ASSERT_EQ(p.size(), 8u);
  double sum = 0;
  for (int i = 0; i < 5; ++i) {
    EXPECT_GT(p[static_cast<std::size_t>(i)], 0.0);
    sum += p[static_cast<std::size_t>(i)];
  }
  EXPECT_NEAR(sum, 1.0, 1e-12);
  for (int i = 5; i < 8; ++i) EXPECT_EQ(p[static_cast<std::size_t>(i)], 0.0);
  std::mt19937_64 rng(1);
  for (int i = 0; i < 2000; ++i) EXPECT_LT(neox::sample_token(row.data(), 8, 5, s, rng), 5);
  s.greedy = true;
  EXPECT_EQ(neox::sample_token(row.data(), 8, 5, s, rng), 1);
  p = neox::sampling_probabilities(row.data(), 8, 5, s);
  EXPECT_EQ(p, (std::vector<double>{0, 1, 0, 0, 0, 0, 0, 0}));
}

TEST(GenerationSampling, TemperatureScalesTheLogits) {
  const std::vector<float> row = {1.0f, 2.0f, 0.0f};
  neox::GenerationSettings s;
  s.temperature = 0.5;
  auto p = neox::sampling_probabilities(row.data(), 3, 3, s);
  const double z = std::exp(2.0) + std::exp(4.0) + 1.0;
  EXPECT_NEAR(p[0], std::exp(2.0) / z, 1e-12);
  EXPECT_NEAR(p[1], std::exp(4.0) / z, 1e-12);
  EXPECT_NEAR(p[2], 1.0 / z, 1e-12);
  s.temperature = 0.0;  // greedy
  p = neox::sampling_probabilities(row.data(), 3, 3, s);
  EXPECT_EQ(p, (std::vector<double>{0, 1, 0}));
  s.temperature = -1.0;
  expect_error([&] { neox::sampling_probabilities(row.data(), 3, 3, s); }, "temperature");
  const std::vector<float> nan_row = {1.0f, NAN, 0.0f};
  s.temperature = 1.0;
  expect_error([&] { neox::sampling_probabilities(nan_row.data(), 3, 3, s); }, "logit");
}

TEST(GenerationSampling, DrawsFollowTheDistributionAndTheSeed) {
  const std::vector<float> row = {std::log(0.2f), std::log(0.8f)};
  neox::GenerationSettings s;
  std::mt19937_64 rng = neox::sequence_rng(42, 0);
  int ones = 0;
  const int n = 40000;
  for (int i = 0; i < n; ++i) ones += neox::sample_token(row.data(), 2, 2, s, rng);
  EXPECT_NEAR(static_cast<double>(ones) / n, 0.8, 0.01);

  auto draws = [&](std::uint64_t seed, std::uint64_t index) {
    std::mt19937_64 r = neox::sequence_rng(seed, index);
    Ids out;
    for (int i = 0; i < 64; ++i) out.push_back(neox::sample_token(row.data(), 2, 2, s, r));
    return out;
  };
  EXPECT_EQ(draws(3, 0), draws(3, 0));
  EXPECT_NE(draws(3, 0), draws(3, 1));
  EXPECT_NE(draws(3, 0), draws(4, 0));
}

}  // namespace
