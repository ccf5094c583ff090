// SPDX-License-Identifier: Apache-2.0
#include "neox/text/tokenizers.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <filesystem>
#include <utility>
#include <mutex>
#include <thread>

#include "neox/text/bpe_tokenizer.h"
#include "neox/text/byte_tokenizer.h"
#include "neox/text/char_tokenizer.h"
#include "neox/train/config.h"
#include "neox/error.h"

namespace neox {

std::vector<std::string> tokenizer_types() {
  return {"HFTokenizer", "GPT2BPETokenizer", "CharLevelTokenizer", "byte"};
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

std::unique_ptr<Tokenizer> make_tokenizer(const TokenizerConfig& config, const std::string& where) {
  if (config.type.empty()) return nullptr;
  const std::string prefix = (where.empty() ? std::string("config") : where) + ": ";
  for (const auto& [key, file] : {std::pair<const char*, const std::string&>{"vocab_file", config.vocab_file},
                                  std::pair<const char*, const std::string&>{"merge_file", config.merge_file}}) {
    if (!file.empty() && !std::filesystem::is_regular_file(file))
      throw Error(prefix + "tokenizer." + key + ": " + file + ": no such file");
  }
  try {
    return make_tokenizer(config.type, config.vocab_file, config.merge_file);
  } catch (const Error& e) {
    throw Error(prefix + "tokenizer (" + config.type + "): " + e.what());
  }
}

std::map<std::string, std::string> tokenizer_files(const TokenizerConfig& config) {
  if (config.type == "HFTokenizer") return {{"tokenizer.json", config.vocab_file}};
  if (config.type == "GPT2BPETokenizer") return {{"vocab.json", config.vocab_file}, {"merges.txt", config.merge_file}};
  return {};
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
