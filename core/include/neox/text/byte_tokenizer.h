// SPDX-License-Identifier: Apache-2.0
// The built-in byte-level tokenizer: ids 0..255 are bytes, 256 is the
// end-of-document token. Needs no files; decode(encode(s)) == s for any bytes.
#pragma once

#include "neox/export.h"
#include "neox/tokenizer.h"

namespace neox {

class NEOX_API ByteTokenizer final : public Tokenizer {
 public:
  static constexpr std::int32_t kEod = 256;
  std::string name() const override { return "byte"; }
  std::int64_t vocab_size() const override { return 257; }
  std::int32_t eod_id() const override { return kEod; }
  std::vector<std::int32_t> encode(std::string_view text) const override;
  // One id per byte: any cut gives the ids of the whole.
  bool can_split_before_newline(char32_t) const override { return true; }
  // The end-of-document token decodes to nothing.
  std::string decode(const std::vector<std::int32_t>& ids) const override;
};

}  // namespace neox
