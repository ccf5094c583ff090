// SPDX-License-Identifier: Apache-2.0
// GPT-NeoX's CharLevelTokenizer: one id per byte of the UTF-8 text (so the
// ids of a text are the same as GPT-NeoX's `tokenize`), vocabulary 512, the
// end-of-document token 0 (which is also the NUL byte, as in GPT-NeoX).
// decode is the exact inverse of encode (GPT-NeoX's detokenize maps each id
// to chr(max(32, id)), which turns newlines into spaces and splits
// multi-byte characters): ids 1..255 are bytes, the end-of-document token
// decodes to nothing, ids 256..511 (never produced by encode) decode to the
// UTF-8 of code point U+0100..U+01FF, as GPT-NeoX's chr(id) would.
#pragma once

#include "neox/export.h"
#include "neox/tokenizer.h"

namespace neox {

class NEOX_API CharTokenizer final : public Tokenizer {
 public:
  static constexpr std::int32_t kEod = 0;
  static constexpr std::int64_t kVocabSize = 512;
  std::string name() const override { return "CharLevelTokenizer"; }
  std::int64_t vocab_size() const override { return kVocabSize; }
  std::int32_t eod_id() const override { return kEod; }
  std::vector<std::int32_t> encode(std::string_view text) const override;
  // One id per byte: any cut gives the ids of the whole.
  bool can_split_before_newline(char32_t) const override { return true; }
  std::string decode(const std::vector<std::int32_t>& ids) const override;
};

}  // namespace neox
