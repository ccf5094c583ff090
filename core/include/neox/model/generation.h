// SPDX-License-Identifier: Apache-2.0
// Text generation: GPT-NeoX's sampling (megatron/text_generation_utils.py)
// over the model's key/value cache (GPTNeoX::forward_cached).
//
// One step, for each sequence, from the logits of its last token:
//   * only the first vocab_size entries count (GenerationSettings::vocab_size,
//     default the model's): the padding entries of the padded vocabulary are
//     never chosen, greedy or sampled;
//   * greedy (or temperature 0): the arg-max (the lowest id among equal maxima);
//   * otherwise: logits / temperature, then filter_logits (top-k, then top-p),
//     then one draw from the softmax of what is left.
// Generation stops per sequence at eod_id (not included in the output) or
// after max_new_tokens, and never runs a sequence past max_length positions.
#pragma once

#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include "neox/export.h"

namespace neox {

class GPTNeoX;

struct GenerationSettings {
  std::int64_t max_new_tokens = 64;  // per sequence
  double temperature = 1.0;          // 0: greedy
  std::int64_t top_k = 0;            // 0: off; keep the k largest logits (and ties with the k-th)
  double top_p = 0.0;                // 0: off; nucleus sampling, see filter_logits
  std::uint64_t seed = 1234;
  std::int32_t eod_id = -1;  // stop token; -1: none
  bool greedy = false;
  // Positions per sequence (prompt + generated) at most; 0: the model's
  // seq_length, as GPT-NeoX never generates past it.
  std::int64_t max_length = 0;
  // Ids are sampled (and prompts accepted) below this; 0: the model's
  // vocab_size. Set it to a tokenizer's vocabulary when the model's is larger.
  std::int64_t vocab_size = 0;
};

// One sequence's result.
struct GeneratedSequence {
  std::vector<std::int32_t> tokens;  // the new tokens, without the prompt and the stop token
  bool finished = false;             // stopped at eod_id (GPT-NeoX's 'finished')
};

// Called with (sequence index, token) for every new token as soon as it is
// chosen (not for the stop token), for streaming.
using TokenCallback = std::function<void(std::size_t sequence, std::int32_t token)>;

// GPT-NeoX's filter_logits, in place on one row: top_k > 0 sets every logit
// below the k-th largest to -inf (ties with it stay); then top_p > 0 sorts
// descending (ties by id), and removes every entry after the first whose
// cumulative softmax probability exceeds top_p (the first one above the
// threshold is kept, and the most likely entry always is).
NEOX_API void filter_logits(std::vector<double>& logits, std::int64_t top_k, double top_p);

// The distribution one step draws from, over all n entries of a logits row
// (padded vocabulary included: its entries from vocab_size on get 0). Greedy
// settings give a one-hot vector. Throws neox::Error for NaN or +inf logits.
NEOX_API std::vector<double> sampling_probabilities(const float* logits, std::int64_t n, std::int64_t vocab_size,
                                                    const GenerationSettings& settings);

// One step: the token chosen from a logits row (see above). Draws one
// uniform number from rng unless greedy.
NEOX_API std::int32_t sample_token(const float* logits, std::int64_t n, std::int64_t vocab_size,
                                   const GenerationSettings& settings, std::mt19937_64& rng);

// The generator of sequence `index` of a generate() call: every sequence has
// its own, seeded from (seed, index), so its samples do not depend on the
// other sequences of the batch.
NEOX_API std::mt19937_64 sequence_rng(std::uint64_t seed, std::uint64_t index);

// Generates continuations of a batch of prompts (token ids in
// [0, vocab_size), each non-empty; an unconditional sample starts from the
// end-of-document token, as in GPT-NeoX). Prompts may differ in length: as in
// GPT-NeoX, no padding enters the attention. The batch runs the shortest
// prompt's length in one chunk, then one position per step for all
// sequences; a sequence whose prompt is longer is fed its own next prompt
// token at those steps, and starts sampling after its prompt. Sequence i
// draws from sequence_rng(settings.seed, i), only at positions it samples.
// A prompt of max_length tokens or more is an error.
NEOX_API std::vector<GeneratedSequence> generate(GPTNeoX& model, const std::vector<std::vector<std::int32_t>>& prompts,
                                                 const GenerationSettings& settings,
                                                 const TokenCallback& on_token = {});

}  // namespace neox
