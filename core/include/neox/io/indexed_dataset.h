// SPDX-License-Identifier: Apache-2.0
// Megatron / GPT-NeoX indexed datasets ("MMIDIDX", version 1): PREFIX.bin
// holds the tokens of every item back to back; PREFIX.idx holds
//   magic "MMIDIDX\0\0" (9 bytes), version u64 = 1, dtype code u8
//   (4 = int32, 8 = uint16; others are refused), item count u64 N,
//   document index count u64 D, sizes i32[N] (tokens per item),
//   pointers i64[N] (byte offset of each item in .bin), doc_idx i64[D]
//   (item index where each document starts, plus the end: D = documents + 1).
// GPT-NeoX's preprocess_data.py writes one item per document.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "neox/dtype.h"
#include "neox/export.h"

namespace neox {

class NEOX_API IndexedDataset {
 public:
  // Maps PREFIX.idx and PREFIX.bin and validates them (magic, version,
  // dtype, counts against the file sizes, sizes/pointers consistent with
  // .bin, doc_idx starting at 0, non-decreasing and ending at the item
  // count); throws neox::Error naming the file.
  static IndexedDataset open(const std::string& prefix);

  const std::string& prefix() const { return prefix_; }
  DType dtype() const { return dtype_; }  // u16 or i32
  std::int64_t num_items() const { return static_cast<std::int64_t>(sizes_.size()); }
  std::int64_t num_documents() const { return static_cast<std::int64_t>(doc_idx_.size()) - 1; }
  std::int64_t num_tokens() const { return num_tokens_; }
  const std::vector<std::int32_t>& sizes() const { return sizes_; }
  const std::vector<std::int64_t>& doc_idx() const { return doc_idx_; }
  // Copies tokens [offset, offset + count) of item `item` into out.
  void read(std::int64_t item, std::int64_t offset, std::int64_t count, std::int32_t* out) const;
  // Largest token id in the whole .bin (one pass; cached).
  std::int64_t max_token() const;

 private:
  struct Mapping;
  std::string prefix_;
  std::shared_ptr<Mapping> bin_;
  DType dtype_ = DType::u16;
  std::vector<std::int32_t> sizes_;
  std::vector<std::int64_t> pointers_;
  std::vector<std::int64_t> doc_idx_;
  std::int64_t num_tokens_ = 0;
  mutable std::int64_t max_token_ = -1;
};

// Writes PREFIX.bin/.idx: items are appended, end_document() closes a
// document, finish() writes the index. Both files are written under
// temporary names and renamed into place by finish(), which also closes an
// unfinished last document; a writer destroyed without finish() removes them.
// An item may also be written in parts (a long document tokenized piece by
// piece): add_to_item() appends tokens to the item being built, end_item()
// closes it; end_document() and finish() close an item being built.
class NEOX_API IndexedDatasetWriter {
 public:
  IndexedDatasetWriter(const std::string& prefix, DType dtype);
  ~IndexedDatasetWriter();
  IndexedDatasetWriter(const IndexedDatasetWriter&) = delete;
  IndexedDatasetWriter& operator=(const IndexedDatasetWriter&) = delete;
  // Throws if a token does not fit the dtype.
  void add_item(const std::int32_t* tokens, std::int64_t count);
  // Appends tokens to the item being built (starting one if none is); throws
  // if a token does not fit the dtype or the item would reach 2^31 tokens.
  void add_to_item(const std::int32_t* tokens, std::int64_t count);
  // Closes the item being built (an item of 0 tokens if none is).
  void end_item();
  // Drops the item being built: its tokens are removed from .bin.
  void discard_item();
  void end_document();
  void finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// uint16 when every id fits (vocabulary below 65500, as GPT-NeoX decides), else int32.
inline DType best_token_dtype(std::int64_t vocab_size) { return vocab_size < 65500 ? DType::u16 : DType::i32; }

}  // namespace neox
