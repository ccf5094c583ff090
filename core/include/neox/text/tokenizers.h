// SPDX-License-Identifier: Apache-2.0
// Choosing a tokenizer by GPT-NeoX's --tokenizer-type name, and encoding
// many texts on several threads (docs/tokenizers.md).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "neox/export.h"
#include "neox/tokenizer.h"

namespace neox {

// The tokenizer of GPT-NeoX type `type`:
//   HFTokenizer         vocab_file = a Hugging Face tokenizer.json (merge_file unused)
//   GPT2BPETokenizer    vocab_file = vocab.json, merge_file = merges.txt
//   CharLevelTokenizer  one id per UTF-8 byte, vocabulary 512, end of document 0
//   byte                neox's byte tokenizer: bytes 0..255, end of document 256
// Throws neox::Error for an unknown type (listing the known ones), a missing
// file name, or a file that cannot be read.
NEOX_API std::unique_ptr<Tokenizer> make_tokenizer(const std::string& type, const std::string& vocab_file,
                                                   const std::string& merge_file);

struct TokenizerConfig;

// The tokenizer a config's [tokenizer] table names, or null when its type is
// empty. Errors name `where` (the config file) and the key: "config.toml:
// tokenizer.vocab_file: /data/20B_tokenizer.json: cannot open ...".
NEOX_API std::unique_ptr<Tokenizer> make_tokenizer(const TokenizerConfig& config, const std::string& where);

// The files of a [tokenizer] table under the names they get in a checkpoint
// or a Hugging Face directory: {"tokenizer.json": vocab_file} for
// HFTokenizer, {"vocab.json": ..., "merges.txt": ...} for GPT2BPETokenizer,
// none otherwise.
NEOX_API std::map<std::string, std::string> tokenizer_files(const TokenizerConfig& config);

// The names make_tokenizer accepts.
NEOX_API std::vector<std::string> tokenizer_types();

// encode(texts[i]) for every i, spread over `threads` threads (0: one per
// hardware thread); the texts are taken one at a time by whichever thread is
// free. Rethrows the first neox::Error a text raised (after all threads stop).
NEOX_API std::vector<std::vector<std::int32_t>> encode_batch(const Tokenizer& tokenizer,
                                                             const std::vector<std::string_view>& texts,
                                                             int threads);

}  // namespace neox
