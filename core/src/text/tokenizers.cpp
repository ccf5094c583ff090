// SPDX-License-Identifier: Apache-2.0
#include "neox/text/tokenizers.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <filesystem>
#include <mutex>
#include <thread>
#include <utility>

#include "neox/error.h"
#include "neox/registry.h"
#include "neox/text/bpe_tokenizer.h"
#include "neox/text/byte_tokenizer.h"
#include "neox/text/char_tokenizer.h"

namespace neox {

std::vector<std::string> tokenizer_types() { return {"HFTokenizer", "GPT2BPETokenizer", "CharLevelTokenizer", "byte"}; }

bool is_builtin_tokenizer(const std::string& type) {
  const auto types = tokenizer_types();
  return std::find(types.begin(), types.end(), type) != types.end();
}

std::unique_ptr<Tokenizer> make_tokenizer(const std::string& type, const std::string& vocab_file,
                                          const std::string& merge_file) {
  if (type == "HFTokenizer") {
    if (vocab_file.empty()) throw Error("HFTokenizer needs a vocab file: the tokenizer.json");
    return BpeTokenizer::from_hf_json(vocab_file);
  }
  if (type == "GPT2BPETokenizer") {
    if (vocab_file.empty() || merge_file.empty())
      throw Error("GPT2BPETokenizer needs a vocab file (vocab.json) and a merge file (merges.txt)");
    return BpeTokenizer::from_gpt2_files(vocab_file, merge_file);
  }
  if (type == "CharLevelTokenizer") return std::make_unique<CharTokenizer>();
  if (type == "byte") return std::make_unique<ByteTokenizer>();
  std::string known;
  for (const auto& t : tokenizer_types()) known += (known.empty() ? "" : ", ") + t;
  throw Error("unknown tokenizer type \"" + type + "\" (known: " + known + ")");
}

namespace {

bool valid_plugin_name(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(),
                                   [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'; });
}

}  // namespace

std::shared_ptr<const Tokenizer> make_tokenizer(const TokenizerConfig& config, const std::string& where,
                                                PluginRegistry* registry, Options options) {
  if (config.type.empty()) return nullptr;
  const std::string prefix = (where.empty() ? std::string("config") : where) + ": ";
  for (const auto& [key, file] : {std::pair<const char*, const std::string&>{"vocab_file", config.vocab_file},
                                  std::pair<const char*, const std::string&>{"merge_file", config.merge_file}}) {
    if (!file.empty() && !std::filesystem::is_regular_file(file))
      throw Error(prefix + "tokenizer." + key + ": " + file + ": no such file");
  }
  if (is_builtin_tokenizer(config.type) || !registry) {
    try {
      return make_tokenizer(config.type, config.vocab_file, config.merge_file);
    } catch (const Error& e) {
      throw Error(prefix + "tokenizer (" + config.type + "): " + e.what());
    }
  }
  if (!valid_plugin_name(config.type)) {
    std::string known;
    for (const auto& t : tokenizer_types()) known += (known.empty() ? "" : ", ") + t;
    throw Error(prefix + "tokenizer.type \"" + config.type + "\" is neither a built-in tokenizer (" + known +
                ") nor the name of a tokenizer plugin (lowercase letters, digits and '-')");
  }
  // A plugin: its options table, plus the [tokenizer] files.
  const SourceLocation from_config{where, 0, 0};
  if (!config.vocab_file.empty()) options.set("vocab_file", config.vocab_file, from_config);
  if (!config.merge_file.empty()) options.set("merge_file", config.merge_file, from_config);
  try {
    return registry->make_tokenizer(config.type, options);
  } catch (const Error& e) {
    throw Error(prefix + "tokenizer (" + config.type + "): " + e.what());
  }
}

std::vector<TokenizerFile> tokenizer_files(const TokenizerConfig& config) {
  if (config.type == "HFTokenizer") return {{"vocab_file", "tokenizer.json", config.vocab_file}};
  if (config.type == "GPT2BPETokenizer")
    return {{"vocab_file", "vocab.json", config.vocab_file}, {"merge_file", "merges.txt", config.merge_file}};
  if (config.type.empty() || is_builtin_tokenizer(config.type)) return {};
  std::vector<TokenizerFile> files;
  for (const auto& [key, path] : {std::pair<const char*, const std::string&>{"vocab_file", config.vocab_file},
                                  std::pair<const char*, const std::string&>{"merge_file", config.merge_file}})
    if (!path.empty()) files.push_back({key, std::filesystem::path(path).filename().string(), path});
  if (files.size() == 2 && files[0].name == files[1].name)
    throw Error("tokenizer (" + config.type + "): vocab_file and merge_file have the same file name, " + files[0].name +
                "; a checkpoint holds both in one directory: rename one");
  return files;
}

std::vector<std::vector<std::int32_t>> encode_batch(const Tokenizer& tokenizer,
                                                    const std::vector<std::string_view>& texts, int threads) {
  std::vector<std::vector<std::int32_t>> out(texts.size());
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const std::size_t n_threads = std::min<std::size_t>(static_cast<std::size_t>(threads), texts.size());
  if (n_threads <= 1) {
    for (std::size_t i = 0; i < texts.size(); ++i) out[i] = tokenizer.encode(texts[i]);
    return out;
  }
  std::atomic<std::size_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  std::mutex error_mutex;
  const auto work = [&] {
    for (;;) {
      if (failed.load(std::memory_order_relaxed)) return;
      const std::size_t i = next.fetch_add(1, std::memory_order_relaxed);
      if (i >= texts.size()) return;
      try {
        out[i] = tokenizer.encode(texts[i]);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
        failed = true;
        return;
      }
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(n_threads - 1);
  for (std::size_t t = 1; t < n_threads; ++t) pool.emplace_back(work);
  work();
  for (auto& th : pool) th.join();
  if (error) std::rethrow_exception(error);
  return out;
}

}  // namespace neox
