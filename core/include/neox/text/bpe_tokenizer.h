// SPDX-License-Identifier: Apache-2.0
// Byte-level BPE tokenizers, encoding and decoding exactly as the Hugging
// Face `tokenizers` library does (docs/tokenizers.md):
//  - a Hugging Face tokenizer.json with a BPE model, a ByteLevel
//    pre-tokenizer and decoder, an optional NFC/NFD/NFKC/NFKD normalizer and
//    added tokens (GPT-NeoX-20B's tokenizer has this shape): name HFTokenizer;
//  - GPT-2's vocab.json + merges.txt: name GPT2BPETokenizer (no added tokens:
//    "<|endoftext|>" in text is ordinary text, as in GPT-2's and GPT-NeoX's
//    encoder; it is the end-of-document id only).
// Thread-safe: encode and decode may run concurrently (the word cache is shared).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "neox/export.h"
#include "neox/tokenizer.h"

namespace neox {

class NEOX_API BpeTokenizer final : public Tokenizer {
 public:
  // Reads a tokenizer.json. Throws neox::Error naming the file (and the key)
  // when it cannot be read, is not JSON, or uses a component other than those
  // above (a WordPiece model, a Metaspace pre-tokenizer, ...).
  static std::unique_ptr<BpeTokenizer> from_hf_json(const std::string& path);
  // Reads GPT-2's vocab.json ({"token": id}) and merges.txt ("a b" per line,
  // an optional "#version" first line). Throws neox::Error naming the file and line.
  static std::unique_ptr<BpeTokenizer> from_gpt2_files(const std::string& vocab_json, const std::string& merges_txt);
  ~BpeTokenizer() override;

  std::string name() const override;
  // One more than the largest id of the vocabulary and the added tokens.
  std::int64_t vocab_size() const override;
  // The id of "<|endoftext|>" (GPT-NeoX's choice for both formats).
  std::int32_t eod_id() const override;
  // Text must be valid UTF-8 (neox::Error with the byte offset otherwise).
  // Like Hugging Face's encode(text) with add_special_tokens=True: a
  // TemplateProcessing post-processor's tokens are added.
  std::vector<std::int32_t> encode(std::string_view text) const override;
  // Keeps special tokens (skip_special_tokens=False). Throws neox::Error for
  // an id that is not in the vocabulary (Hugging Face drops such ids silently).
  std::string decode(const std::vector<std::int32_t>& ids) const override;
  std::string decode(const std::vector<std::int32_t>& ids, bool skip_special_tokens) const;
  // True when `next` is a letter or a number (\p{L}, \p{N}) and the
  // tokenizer has no post-processor tokens, no add_prefix_space, the GPT-2
  // regex, no normalizer or only NFC/NFD, and no added token that contains
  // "\n", has rstrip, or starts (before or after normalization) with a
  // letter or a number: the regex then ends a pre-token before such a "\n",
  // no added token can match across it or at `next`, and NFC/NFD leave the
  // text on both sides of it apart.
  bool can_split_before_newline(char32_t next) const override;

  // The id of a token as the vocabulary spells it ("Ġthe"), if any.
  std::optional<std::int32_t> token_to_id(std::string_view token) const;
  // The vocabulary's spelling of `id`; throws neox::Error for an unknown id.
  std::string id_to_token(std::int32_t id) const;

  struct Impl;

 private:
  explicit BpeTokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace neox
