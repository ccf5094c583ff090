// SPDX-License-Identifier: Apache-2.0
// Sampling and the generation loop (see neox/model/generation.h). The choices
// follow GPT-NeoX's megatron/text_generation_utils.py (stream_tokens,
// filter_logits); the random draws are this file's own, from std::mt19937_64
// (whose output the standard fixes), so a seed gives the same samples on
// every platform.
#include "neox/model/generation.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>
#include <string>

#include "neox/backend.h"
#include "neox/error.h"
#include "neox/model/gpt_neox.h"

namespace neox {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

bool is_greedy(const GenerationSettings& s) { return s.greedy || s.temperature == 0.0; }

void check_settings(const GenerationSettings& s) {
  if (s.max_new_tokens < 0)
    throw Error("generate: max_new_tokens must be >= 0, got " + std::to_string(s.max_new_tokens));
  if (!(s.temperature >= 0.0) || !std::isfinite(s.temperature))
    throw Error("generate: temperature must be a number >= 0, got " + std::to_string(s.temperature));
  if (s.top_k < 0) throw Error("generate: top_k must be >= 0, got " + std::to_string(s.top_k));
  if (!(s.top_p >= 0.0 && s.top_p <= 1.0))
    throw Error("generate: top_p must be in [0, 1], got " + std::to_string(s.top_p));
  if (s.max_length < 0 || s.vocab_size < 0) throw Error("generate: max_length and vocab_size must be >= 0");
}

void check_row(const float* logits, std::int64_t n, std::int64_t vocab_size) {
  if (vocab_size < 1 || vocab_size > n)
    throw Error("sampling: vocab_size " + std::to_string(vocab_size) + " must be in [1, " + std::to_string(n) +
                "] (the logits row's length)");
  for (std::int64_t i = 0; i < vocab_size; ++i)
    if (std::isnan(logits[i]) || logits[i] == std::numeric_limits<float>::infinity())
      throw Error("sampling: the model produced logit " + std::to_string(logits[i]) + " for token " +
                  std::to_string(i));
}

// The first index of the largest of logits[0, vocab_size).
std::int32_t argmax(const float* logits, std::int64_t vocab_size) {
  std::int64_t best = 0;
  for (std::int64_t i = 1; i < vocab_size; ++i)
    if (logits[i] > logits[best]) best = i;
  return static_cast<std::int32_t>(best);
}

// A uniform double in [0, 1) from the top 53 bits of one draw.
double uniform01(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

}  // namespace

void filter_logits(std::vector<double>& logits, std::int64_t top_k, double top_p) {
  const std::size_t n = logits.size();
  if (n == 0) return;
  if (top_k > 0 && static_cast<std::size_t>(top_k) < n) {
    // Remove all tokens with a logit below the k-th largest (ties stay).
    std::vector<double> sorted = logits;
    std::nth_element(sorted.begin(), sorted.begin() + (top_k - 1), sorted.end(), std::greater<double>());
    const double kth = sorted[static_cast<std::size_t>(top_k - 1)];
    for (double& x : logits)
      if (x < kth) x = -kInf;
  }
  if (top_p > 0.0) {
    std::vector<std::size_t> order(n);
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return logits[a] > logits[b]; });
    const double mx = logits[order[0]];
    if (mx == -kInf) return;
    double z = 0.0;
    for (double x : logits) z += std::exp(x - mx);
    // Entry r goes when the cumulative probability of the entries before it
    // already exceeds top_p: the first entry above the threshold is kept.
    double cumulative = 0.0;
    for (std::size_t r = 0; r < n; ++r) {
      double& x = logits[order[r]];
      const bool remove = r > 0 && cumulative > top_p;
      cumulative += std::exp(x - mx) / z;
      if (remove) x = -kInf;
    }
  }
}

std::vector<double> sampling_probabilities(const float* logits, std::int64_t n, std::int64_t vocab_size,
                                           const GenerationSettings& settings) {
  check_settings(settings);
  check_row(logits, n, vocab_size);
  std::vector<double> p(static_cast<std::size_t>(n), 0.0);
  if (is_greedy(settings)) {
    p[static_cast<std::size_t>(argmax(logits, vocab_size))] = 1.0;
    return p;
  }
  std::vector<double> x(static_cast<std::size_t>(vocab_size));
  for (std::int64_t i = 0; i < vocab_size; ++i) x[static_cast<std::size_t>(i)] = logits[i] / settings.temperature;
  filter_logits(x, settings.top_k, settings.top_p);
  const double mx = *std::max_element(x.begin(), x.end());
  if (mx == -kInf) throw Error("sampling: every logit is -inf");
  double z = 0.0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    p[i] = std::exp(x[i] - mx);
    z += p[i];
  }
  for (std::size_t i = 0; i < x.size(); ++i) p[i] /= z;
  return p;
}

std::int32_t sample_token(const float* logits, std::int64_t n, std::int64_t vocab_size,
                          const GenerationSettings& settings, std::mt19937_64& rng) {
  if (is_greedy(settings)) {
    check_row(logits, n, vocab_size);
    return argmax(logits, vocab_size);
  }
  const std::vector<double> p = sampling_probabilities(logits, n, vocab_size, settings);
  // Inverse CDF in id order: the first id whose cumulative mass exceeds u.
  const double total = std::accumulate(p.begin(), p.end(), 0.0);
  const double target = uniform01(rng) * total;
  double cumulative = 0.0;
  std::int64_t last = -1;
  for (std::size_t i = 0; i < p.size(); ++i) {
    if (p[i] <= 0.0) continue;
    cumulative += p[i];
    last = static_cast<std::int64_t>(i);
    if (target < cumulative) return static_cast<std::int32_t>(i);
  }
  return static_cast<std::int32_t>(last);  // rounding left target at the total
}

std::mt19937_64 sequence_rng(std::uint64_t seed, std::uint64_t index) {
  // splitmix64 of (seed, index): distinct, well-mixed seeds per sequence.
  std::uint64_t z = seed + 0x9E3779B97F4A7C15ull * (index + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return std::mt19937_64(z);
}

std::vector<GeneratedSequence> generate(GPTNeoX& model, const std::vector<std::vector<std::int32_t>>& prompts,
                                        const GenerationSettings& settings, const TokenCallback& on_token) {
  check_settings(settings);
  const ModelConfig& cfg = model.config();
  const std::int64_t B = static_cast<std::int64_t>(prompts.size());
  if (B == 0) return {};
  const std::int64_t vocab = settings.vocab_size > 0 ? settings.vocab_size : cfg.vocab_size;
  if (vocab > cfg.padded_vocab_size())
    throw Error("generate: vocab_size " + std::to_string(vocab) + " exceeds the model's vocabulary of " +
                std::to_string(cfg.padded_vocab_size()));
  if (settings.eod_id < -1 || settings.eod_id >= vocab)
    throw Error("generate: eod_id " + std::to_string(settings.eod_id) + " is outside the vocabulary [0, " +
                std::to_string(vocab) + ") (-1: none)");
  const std::int64_t limit = settings.max_length > 0 ? settings.max_length : cfg.seq_length;
  if (cfg.pos_emb == "learned" && limit > cfg.max_position_embeddings)
    throw Error("generate: max_length " + std::to_string(limit) + " exceeds max_position_embeddings " +
                std::to_string(cfg.max_position_embeddings) + " (learned position embeddings)");

  std::vector<std::int64_t> len(static_cast<std::size_t>(B)), target(len.size());
  for (std::size_t b = 0; b < prompts.size(); ++b) {
    const auto& p = prompts[b];
    if (p.empty())
      throw Error("generate: prompt " + std::to_string(b) +
                  " is empty (an unconditional sample starts from the end-of-document token)");
    for (std::size_t i = 0; i < p.size(); ++i)
      if (p[i] < 0 || p[i] >= vocab)
        throw Error("generate: prompt " + std::to_string(b) + ": token " + std::to_string(p[i]) + " at position " +
                    std::to_string(i) + " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
    len[b] = static_cast<std::int64_t>(p.size());
    if (len[b] >= limit)
      throw Error("generate: prompt " + std::to_string(b) + " has " + std::to_string(len[b]) +
                  " tokens, which leaves no room in the model's context of " + std::to_string(limit) + " positions");
    target[b] = std::min(len[b] + settings.max_new_tokens, limit);
  }
  std::vector<GeneratedSequence> results(prompts.size());
  if (settings.max_new_tokens == 0) return results;

  const std::int64_t min_len = *std::min_element(len.begin(), len.end());
  const std::int64_t total = *std::max_element(target.begin(), target.end());
  const std::int64_t V = cfg.padded_vocab_size();
  // The last position is produced, never fed: total - 1 positions suffice.
  InferenceCache cache = model.make_cache(B, total - 1);
  std::vector<std::mt19937_64> rngs;
  for (std::int64_t b = 0; b < B; ++b) rngs.push_back(sequence_rng(settings.seed, static_cast<std::uint64_t>(b)));
  std::vector<bool> done(prompts.size(), false);
  const std::int32_t filler = settings.eod_id >= 0 ? settings.eod_id : 0;  // fed to finished sequences

  std::vector<std::int32_t> feed(static_cast<std::size_t>(B * min_len));
  for (std::int64_t b = 0; b < B; ++b)
    std::copy_n(prompts[static_cast<std::size_t>(b)].begin(), min_len, feed.begin() + b * min_len);
  Tensor logits = model.forward_cached(Tensor::wrap(feed.data(), {B, min_len}, DType::i32), cache, true);
  for (std::int64_t pos = min_len;; ++pos) {
    Tensor host = model.backend().to_host(logits);  // [B, 1, V]
    std::vector<std::int32_t> next(static_cast<std::size_t>(B));
    bool all_done = true;
    for (std::size_t b = 0; b < prompts.size(); ++b) {
      if (pos < len[b]) {  // still inside its prompt
        next[b] = prompts[b][static_cast<std::size_t>(pos)];
        all_done = false;
        continue;
      }
      if (done[b]) {
        next[b] = filler;
        continue;
      }
      const float* row = host.ptr<float>() + static_cast<std::int64_t>(b) * V;
      const std::int32_t token = sample_token(row, V, vocab, settings, rngs[b]);
      next[b] = token;
      if (settings.eod_id >= 0 && token == settings.eod_id) {
        done[b] = true;
        results[b].finished = true;
      } else {
        results[b].tokens.push_back(token);
        if (on_token) on_token(b, token);
        if (pos + 1 >= target[b]) done[b] = true;
      }
      if (!done[b]) all_done = false;
    }
    if (all_done) break;
    logits = model.forward_cached(Tensor::wrap(next.data(), {B, 1}, DType::i32), cache, true);
  }
  return results;
}

}  // namespace neox
