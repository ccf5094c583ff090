// SPDX-License-Identifier: Apache-2.0
// Tokenizer: text <-> token ids. Thread-safe for concurrent encode/decode.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>
#include "neox/export.h"

namespace neox {

class NEOX_API Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::string name() const = 0;
  virtual std::int64_t vocab_size() const = 0;
  // End-of-document token id, appended between documents.
  virtual std::int32_t eod_id() const = 0;
  virtual std::vector<std::int32_t> encode(std::string_view text) const = 0;
  // Throws neox::Error for an id outside [0, vocab_size).
  virtual std::string decode(const std::vector<std::int32_t>& ids) const = 0;
  // For encoding a long text in pieces (neox preprocess streams a plain-text
  // file so): true when encode(a + b) equals encode(a) followed by encode(b)
  // for all texts a and b such that b starts with "\n" followed by the
  // character `next` (a Unicode code point). False unless a tokenizer
  // knows better: a text is then encoded whole.
  virtual bool can_split_before_newline(char32_t next) const {
    (void)next;
    return false;
  }
};

}  // namespace neox
