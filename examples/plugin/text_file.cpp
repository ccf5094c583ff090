// SPDX-License-Identifier: Apache-2.0
// data plugin `text-file`: trains on a plain UTF-8 text file, no
// preprocessing step. The file is split into documents, each encoded as
// neox's byte tokenizer encodes it (ids 0-255 are the bytes, 256 ends a
// document; the config's [tokenizer] type = "byte" and model.vocab_size >=
// 257: written out here, since a plugin uses only neox's SDK), the
// documents are concatenated, and the token stream is cut into samples of
// seq_length + 1 tokens (input ids, and the labels shifted by one), packed as
// GPT-NeoX packs documents. The last valid_fraction and test_fraction of the
// samples are the valid and test splits; the train split is shuffled again
// in every epoch.
//
// Options ([plugins.options.text-file]):
//   path            the text file (required); relative to the working directory
//   documents       "paragraphs" (default: blocks separated by blank lines),
//                   "lines" (every non-blank line) or "file" (the whole file)
//   valid_fraction  share of the samples for the valid split, [0, 0.5], default 0.05
//   test_fraction   share of the samples for the test split, [0, 0.5], default 0.05
//   shuffle         shuffle the train samples per epoch (default true)
//   max_bytes       refuse larger files (default 1 GiB; the file is read into memory)
//
// Deterministic: the order depends only on the seed ([training] seed), the
// split and the epoch (a SplitMix64 stream and a Fisher-Yates shuffle written
// out here, not the standard library's distributions, whose results differ
// between implementations). With data parallelism, rank r takes samples
// [r*B, (r+1)*B) of each group of dp_size*B consecutive samples;
// position() counts the samples the whole group has consumed, so seek()
// resumes exactly.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <memory>
#include <numeric>
#include <string>
#include <string_view>
#include <vector>

#include "neox/data_source.h"
#include "neox/error.h"
#include "neox/options.h"
#include "neox/plugin.h"

namespace {

// neox's byte tokenizer ([tokenizer] type = "byte"): ids 0-255 are the
// bytes, 256 ends a document.
constexpr std::int32_t kEndOfDocument = 256;
constexpr std::int64_t kByteVocabulary = 257;

using neox::Error;
using neox::Split;

// Reads `path` whole; throws naming the option that gave it.
std::string read_file(const std::string& path, std::int64_t max_bytes, const std::string& where) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw Error(where + ": cannot open '" + path + "' (relative paths are relative to the working directory)");
  const std::streamoff size = in.tellg();
  if (size < 0) throw Error(where + ": cannot read '" + path + "'");
  if (size > max_bytes)
    throw Error(where + ": '" + path + "' has " + std::to_string(size) + " bytes, more than max_bytes = " +
                std::to_string(max_bytes) + "; raise max_bytes or preprocess it with `neox preprocess`");
  std::string text(static_cast<std::size_t>(size), '\0');
  in.seekg(0);
  if (!in.read(text.data(), size)) throw Error(where + ": error reading '" + path + "'");
  return text;
}

// Throws at the first byte that is not well-formed UTF-8 (overlong forms,
// surrogates and code points above U+10FFFF included), naming line and column.
void check_utf8(std::string_view text, const std::string& path) {
  std::size_t line = 1, line_start = 0;
  for (std::size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    std::size_t len = 0;
    std::uint32_t cp = 0, min = 0;
    if (c < 0x80) {
      if (c == '\n') line++, line_start = i + 1;
      i++;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      len = 2, cp = c & 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3, cp = c & 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4, cp = c & 0x07, min = 0x10000;
    }
    bool ok = len > 0 && i + len <= text.size();
    for (std::size_t k = 1; ok && k < len; ++k) {
      const auto cc = static_cast<unsigned char>(text[i + k]);
      ok = (cc & 0xc0) == 0x80;
      cp = (cp << 6) | (cc & 0x3f);
    }
    ok = ok && cp >= min && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff);
    if (!ok) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02x", c);
      throw Error(path + ":" + std::to_string(line) + ":" + std::to_string(i - line_start + 1) + ": not UTF-8 (byte " +
                  hex + " at offset " + std::to_string(i) + ")");
    }
    i += len;
  }
}

bool blank(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c == ' ' || c == '\t' || c == '\r'; });
}

// The documents of `text`, as views into it.
std::vector<std::string_view> documents(std::string_view text, const std::string& mode) {
  std::vector<std::string_view> docs;
  if (mode == "file") {
    if (!blank(text)) docs.push_back(text);
    return docs;
  }
  std::size_t doc_begin = std::string_view::npos, doc_end = 0;
  auto flush = [&] {
    if (doc_begin != std::string_view::npos) docs.push_back(text.substr(doc_begin, doc_end - doc_begin));
    doc_begin = std::string_view::npos;
  };
  for (std::size_t pos = 0; pos < text.size();) {
    std::size_t nl = text.find('\n', pos);
    const std::size_t end = nl == std::string_view::npos ? text.size() : nl;
    const std::string_view line = text.substr(pos, end - pos);
    if (blank(line)) {
      flush();
    } else if (mode == "lines") {
      docs.push_back(line);
    } else {  // paragraphs: the lines of a block with their newlines, less the last one
      if (doc_begin == std::string_view::npos) doc_begin = pos;
      doc_end = end;
    }
    pos = nl == std::string_view::npos ? text.size() : nl + 1;
  }
  flush();
  return docs;
}

// SplitMix64: a small, fully specified generator.
struct SplitMix64 {
  std::uint64_t state;
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n) (Lemire's multiply-shift; the bias is below 2^-40 for
  // any n that fits in memory).
  std::uint64_t below(std::uint64_t n) {
    return static_cast<std::uint64_t>((static_cast<unsigned __int128>(next()) * n) >> 64);
  }
};

class TextFileSource final : public neox::DataSource {
 public:
  TextFileSource(const neox::Options& o, const neox::DataContext& ctx) : ctx_(ctx) {
    path_ = o.get_string("path", "");
    const std::string mode = o.get_string("documents", "paragraphs", {"paragraphs", "lines", "file"});
    const double valid_fraction = o.get_double("valid_fraction", 0.05, 0.0, 0.5);
    const double test_fraction = o.get_double("test_fraction", 0.05, 0.0, 0.5);
    shuffle_ = o.get_bool("shuffle", true);
    const std::int64_t max_bytes = o.get_int("max_bytes", std::int64_t{1} << 30, 1, std::int64_t{1} << 40);
    o.reject_unknown();
    if (path_.empty()) throw Error(o.table() + ".path: required: the UTF-8 text file to train on");
    if (ctx.seq_length < 1 || ctx.micro_batch_size < 1)
      throw Error("text-file: seq_length and micro_batch_size must be at least 1");
    if (ctx.dp_size < 1 || ctx.dp_rank < 0 || ctx.dp_rank >= ctx.dp_size)
      throw Error("text-file: data-parallel rank " + std::to_string(ctx.dp_rank) + " is not in [0, " +
                  std::to_string(ctx.dp_size) + ")");
    if (ctx.vocab_size < kByteVocabulary)
      throw Error("text-file: model.vocab_size is " + std::to_string(ctx.vocab_size) +
                  ", but the byte tokenizer's ids go up to " + std::to_string(kEndOfDocument) +
                  ": set model.vocab_size = " + std::to_string(kByteVocabulary) + " and [tokenizer] type = \"byte\"");

    const std::string text = read_file(path_, max_bytes, o.where("path"));
    check_utf8(text, path_);
    const auto docs = documents(text, mode);
    for (auto d : docs) {
      for (char c : d) tokens_.push_back(static_cast<unsigned char>(c));
      tokens_.push_back(kEndOfDocument);
    }
    const std::int64_t T = ctx.seq_length;
    const std::int64_t n = tokens_.empty() ? 0 : (static_cast<std::int64_t>(tokens_.size()) - 1) / T;
    const auto n_valid = static_cast<std::int64_t>(static_cast<double>(n) * valid_fraction + 0.5);
    const auto n_test = static_cast<std::int64_t>(static_cast<double>(n) * test_fraction + 0.5);
    const std::int64_t n_train = n - n_valid - n_test;
    if (n_train < 1)
      throw Error(o.where("path") + ": '" + path_ + "' gives " + std::to_string(tokens_.size()) + " tokens in " +
                  std::to_string(docs.size()) + " documents, " + std::to_string(n) + " samples of seq_length + 1 = " +
                  std::to_string(T + 1) + " tokens, too few for a train split (valid " + std::to_string(n_valid) +
                  ", test " + std::to_string(n_test) + "): use a longer file or a shorter seq_length");
    splits_[0].first = 0, splits_[0].count = n_train;
    splits_[1].first = n_train, splits_[1].count = n_valid;
    splits_[2].first = n_train + n_valid, splits_[2].count = n_test;
    spdlog::info(
        "text-file: {}: {} bytes, {} documents ({}), {} tokens; samples of {} tokens: {} train, {} valid, "
        "{} test",
        path_, text.size(), docs.size(), mode, tokens_.size(), T, n_train, n_valid, n_test);
  }

  std::string name() const override { return "text-file"; }
  std::int64_t num_samples(Split split) const override { return at(split).count; }

  neox::Batch next(Split split) override {
    State& s = at(split);
    if (s.count == 0)
      throw Error(std::string("text-file: the ") + neox::split_name(split) + " split of '" + path_ +
                  "' is empty: raise its fraction (valid_fraction, test_fraction) or set training.eval_iters = 0");
    const std::int64_t B = ctx_.micro_batch_size, T = ctx_.seq_length;
    neox::Batch batch;
    batch.input_ids = neox::Tensor::zeros_host({B, T}, neox::DType::i64);
    batch.labels = neox::Tensor::zeros_host({B, T}, neox::DType::i64);
    batch.loss_mask = neox::Tensor::zeros_host({B, T}, neox::DType::f32);
    auto* ids = batch.input_ids.ptr<std::int64_t>();
    auto* labels = batch.labels.ptr<std::int64_t>();
    auto* mask = batch.loss_mask.ptr<float>();
    for (std::int64_t b = 0; b < B; ++b) {
      const std::int64_t sample = s.first + sample_at(split, s.position + ctx_.dp_rank * B + b);
      const std::int32_t* tok = tokens_.data() + sample * T;
      for (std::int64_t t = 0; t < T; ++t) {
        ids[b * T + t] = tok[t];
        labels[b * T + t] = tok[t + 1];
        mask[b * T + t] = 1.0f;
      }
    }
    s.position += B * ctx_.dp_size;
    return batch;
  }

  std::int64_t position(Split split) const override { return at(split).position; }
  void seek(Split split, std::int64_t position) override {
    if (position < 0)
      throw Error(std::string("text-file: cannot seek the ") + neox::split_name(split) +
                  " split to a negative position " + std::to_string(position));
    at(split).position = position;
  }

 private:
  struct State {
    std::int64_t first = 0;     // the split's first sample
    std::int64_t count = 0;     // its samples
    std::int64_t position = 0;  // samples consumed by all ranks
    std::int64_t epoch = -1;    // the epoch `order` is for
    std::vector<std::int64_t> order;
  };

  // The index within the split of the `index`-th sample drawn from it.
  std::int64_t sample_at(Split split, std::int64_t index) {
    State& s = at(split);
    const std::int64_t epoch = index / s.count, k = index % s.count;
    if (split != Split::train || !shuffle_) return k;
    if (s.epoch != epoch) {
      s.order.resize(static_cast<std::size_t>(s.count));
      std::iota(s.order.begin(), s.order.end(), std::int64_t{0});
      SplitMix64 rng{ctx_.seed * 0x100000001b3ull + static_cast<std::uint64_t>(epoch) * 0x9e3779b97f4a7c15ull};
      for (std::int64_t i = s.count - 1; i > 0; --i)
        std::swap(s.order[static_cast<std::size_t>(i)],
                  s.order[static_cast<std::size_t>(rng.below(static_cast<std::uint64_t>(i) + 1))]);
      s.epoch = epoch;
    }
    return s.order[static_cast<std::size_t>(k)];
  }

  State& at(Split s) { return splits_[index_of(s)]; }
  const State& at(Split s) const { return splits_[index_of(s)]; }
  static std::size_t index_of(Split s) {
    const auto i = static_cast<std::size_t>(s);
    if (i > 2) throw Error("text-file: unknown split " + std::to_string(i));
    return i;
  }

  neox::DataContext ctx_;
  std::string path_;
  bool shuffle_ = true;
  std::vector<std::int32_t> tokens_;
  std::array<State, 3> splits_;
};

neox::DataSource* make_text_file(const neox::Options& options, const neox::DataContext& context) {
  try {
    return new TextFileSource(options, context);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {  // bad_alloc, I/O: nothing but neox::Error leaves a plugin
    throw Error(std::string("text-file: ") + e.what());
  }
}

}  // namespace

NEOX_PLUGIN(data, "text-file", "1.0",
            "example: a UTF-8 text file, byte-tokenized and packed into samples, shuffled per epoch", &make_text_file)
