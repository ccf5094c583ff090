// SPDX-License-Identifier: Apache-2.0
// Choosing a tokenizer: GPT-NeoX's --tokenizer-type names for the built-in
// ones, or a tokenizer plugin's name; and encoding many texts on several
// threads (docs/tokenizers.md).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "neox/export.h"
#include "neox/options.h"
#include "neox/tokenizer.h"

namespace neox {

class PluginRegistry;

// The tokenizer of the run's text, as GPT-NeoX's tokenizer_type, vocab_file
// and merge_file ([tokenizer] of a config; docs/tokenizers.md). Relative
// file names in a config file are resolved against the file's directory
// when it is read.
struct TokenizerConfig {
  std::string type;        // a built-in type (tokenizer_types()), a tokenizer plugin's name, or "" for none
  std::string vocab_file;  // HFTokenizer: tokenizer.json; GPT2BPETokenizer: vocab.json; a plugin: its file
  std::string merge_file;  // GPT2BPETokenizer: merges.txt; a plugin: its second file
};

// The built-in tokenizers, by GPT-NeoX type name:
//   HFTokenizer         vocab_file = a Hugging Face tokenizer.json (merge_file unused)
//   GPT2BPETokenizer    vocab_file = vocab.json, merge_file = merges.txt
//   CharLevelTokenizer  one id per UTF-8 byte, vocabulary 512, end of document 0
//   byte                neox's byte tokenizer: bytes 0..255, end of document 256
NEOX_API std::vector<std::string> tokenizer_types();
NEOX_API bool is_builtin_tokenizer(const std::string& type);

// A built-in tokenizer. Throws neox::Error for an unknown type (listing the
// known ones), a missing file name, or a file that cannot be read.
NEOX_API std::unique_ptr<Tokenizer> make_tokenizer(const std::string& type, const std::string& vocab_file,
                                                   const std::string& merge_file);

// The tokenizer `config` names, or null when its type is empty: a built-in
// one, or else the `tokenizer` plugin named `config.type` (the file
// neox_tokenizer_<type>.so), made by `registry` with `options` (its
// [plugins.options.<type>] table) plus vocab_file and merge_file when they
// are set. Without a registry only built-in types are accepted. Errors name
// `where` (the config file, or the command-line option) and the key:
// "config.toml: tokenizer.vocab_file: /data/20B_tokenizer.json: no such file".
NEOX_API std::shared_ptr<const Tokenizer> make_tokenizer(const TokenizerConfig& config, const std::string& where,
                                                         PluginRegistry* registry = nullptr,
                                                         Options options = Options());

// A file of a [tokenizer] table and the name it gets in a checkpoint or a
// Hugging Face directory: HFTokenizer's vocab_file is tokenizer.json,
// GPT2BPETokenizer's vocab.json and merges.txt, a plugin's keep their file
// names; the built-in byte and char-level tokenizers have none.
struct TokenizerFile {
  std::string key;   // "vocab_file" or "merge_file"
  std::string name;  // the name in the checkpoint
  std::string path;  // where it is now
};
NEOX_API std::vector<TokenizerFile> tokenizer_files(const TokenizerConfig& config);

// encode(texts[i]) for every i, spread over `threads` threads (0: one per
// hardware thread); the texts are taken one at a time by whichever thread is
// free. Rethrows the first neox::Error a text raised (after all threads stop).
NEOX_API std::vector<std::vector<std::int32_t>> encode_batch(const Tokenizer& tokenizer,
                                                             const std::vector<std::string_view>& texts, int threads);

}  // namespace neox
