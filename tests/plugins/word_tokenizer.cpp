// SPDX-License-Identifier: Apache-2.0
// Test plugin: a `tokenizer` plugin, what `[tokenizer] type = "test-words"`
// makes. A word-level tokenizer over a vocabulary file (vocab_file, one
// token per line, the first the end-of-document token): text is split at
// ASCII whitespace, each word is its line's id, and decode joins words with
// one space. Options ([plugins.options.test-words]):
//   vocab_file  the vocabulary (set from [tokenizer] vocab_file)
//   lowercase   fold ASCII capitals before the lookup (default false)
//   unknown     the token a word not in the vocabulary becomes; unset: an error
#include <cctype>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "neox/error.h"
#include "neox/options.h"
#include "neox/plugin.h"
#include "neox/tokenizer.h"

namespace {

class WordTokenizer final : public neox::Tokenizer {
 public:
  explicit WordTokenizer(const neox::Options& options) {
    const std::string path = options.get_string("vocab_file", "");
    lowercase_ = options.get_bool("lowercase", false);
    const std::string unknown = options.get_string("unknown", "");
    options.reject_unknown();
    if (path.empty()) throw neox::Error(options.where("vocab_file") + ": test-words needs a vocab_file");
    std::ifstream in(path);
    if (!in) throw neox::Error(path + ": cannot open");
    for (std::string line; std::getline(in, line);) {
      if (ids_.count(line)) throw neox::Error(path + ": the word \"" + line + "\" is listed twice");
      ids_[line] = static_cast<std::int32_t>(words_.size());
      words_.push_back(line);
    }
    if (words_.empty()) throw neox::Error(path + ": an empty vocabulary");
    if (!unknown.empty()) {
      auto it = ids_.find(unknown);
      if (it == ids_.end()) throw neox::Error(options.where("unknown") + ": \"" + unknown + "\" is not in " + path);
      unknown_ = it->second;
    }
  }
  std::string name() const override { return "test-words"; }
  std::int64_t vocab_size() const override { return static_cast<std::int64_t>(words_.size()); }
  std::int32_t eod_id() const override { return 0; }
  std::vector<std::int32_t> encode(std::string_view text) const override {
    std::vector<std::int32_t> ids;
    std::string word;
    auto flush = [&] {
      if (word.empty()) return;
      auto it = ids_.find(word);
      if (it != ids_.end())
        ids.push_back(it->second);
      else if (unknown_ >= 0)
        ids.push_back(unknown_);
      else
        throw neox::Error("test-words: \"" + word + "\" is not in the vocabulary");
      word.clear();
    };
    for (char c : text) {
      if (std::isspace(static_cast<unsigned char>(c))) {
        flush();
      } else {
        word += lowercase_ ? static_cast<char>(std::tolower(static_cast<unsigned char>(c))) : c;
      }
    }
    flush();
    return ids;
  }
  std::string decode(const std::vector<std::int32_t>& ids) const override {
    std::string text;
    for (std::size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] < 0 || ids[i] >= vocab_size())
        throw neox::Error("test-words: id " + std::to_string(ids[i]) + " at position " + std::to_string(i) +
                          " is outside [0, " + std::to_string(vocab_size()) + ")");
      text += (text.empty() ? "" : " ") + words_[static_cast<std::size_t>(ids[i])];
    }
    return text;
  }

 private:
  std::map<std::string, std::int32_t> ids_;
  std::vector<std::string> words_;
  bool lowercase_ = false;
  std::int32_t unknown_ = -1;
};

neox::Tokenizer* make(const neox::Options& options) { return new WordTokenizer(options); }

}  // namespace

NEOX_PLUGIN(tokenizer, "test-words", "1.0", "test: words of a vocabulary file", &make)
