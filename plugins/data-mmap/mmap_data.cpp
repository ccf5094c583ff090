// SPDX-License-Identifier: Apache-2.0
// data plugin `mmap`: GPT-NeoX's training data, sample for sample.
//
// Reads Megatron/GPT-NeoX indexed datasets (PREFIX.bin/.idx) and serves the
// samples GPT-NeoX's GPT2Dataset (pack_impl "packed") and BlendableDataset
// would serve, in the same order (see gpt2_index.h and docs/data.md):
//   * `data_path`: one prefix whose documents `split` divides into train,
//     validation and test;
//   * `train_data_paths` / `valid_data_paths` / `test_data_paths`: lists of
//     prefixes blended per split with `*_data_weights` (default all equal)
//     or `weight_by_num_documents`.
// Each micro-batch takes B = micro_batch_size samples; with data parallelism
// rank r takes samples [r*B, (r+1)*B) of each group of dp_size*B consecutive
// samples, as GPT-NeoX's DistributedBatchSampler does. position() counts the
// samples the whole data-parallel group has consumed, so it is the same on
// every rank. A split repeats after its last complete group of dp_size*B
// samples (GPT-NeoX's drop_last), or after its last sample when it holds
// fewer than one group.
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gpt2_index.h"
#include "neox/data_source.h"
#include "neox/error.h"
#include "neox/io/indexed_dataset.h"
#include "neox/options.h"
#include "neox/plugin.h"

namespace neox {
namespace {

using gpt2::SampleSource;

constexpr const char* kDefaultSplit = "969,30,1";

// A weights option: an array of numbers written as strings (["0.3", "0.7"])
// or one comma-separated string ("0.3,0.7").
std::vector<double> get_weights(const Options& o, const std::string& key) {
  std::vector<std::string> items = o.get_strings(key);
  if (items.size() == 1 && items[0].find(',') != std::string::npos) {
    std::string all = items[0];
    items.clear();
    std::size_t start = 0;
    while (true) {
      const auto at = all.find(',', start);
      items.push_back(all.substr(start, at == std::string::npos ? std::string::npos : at - start));
      if (at == std::string::npos) break;
      start = at + 1;
    }
  }
  std::vector<double> out;
  for (const auto& s : items) {
    const char* b = s.c_str();
    while (*b == ' ' || *b == '\t') ++b;
    char* end = nullptr;
    errno = 0;
    const double v = std::strtod(b, &end);
    const char* e = end;
    while (e && (*e == ' ' || *e == '\t')) ++e;
    if (end == b || *e != '\0' || !std::isfinite(v) || v < 0)
      throw Error(o.where(key) + ": \"" + s +
                  "\" is not a weight (give numbers >= 0 as strings, [\"0.3\", \"0.7\"], or one "
                  "comma-separated string, \"0.3,0.7\")");
    out.push_back(v);
  }
  return out;
}

struct SplitData {
  std::shared_ptr<const SampleSource> source;  // null: no data for this split
  std::int64_t requested = 0;
  std::int64_t position = 0;
  std::string origin;  // for messages
};

class MmapDataSource final : public DataSource {
 public:
  MmapDataSource(const Options& o, const DataContext& ctx) : ctx_(ctx) {
    const std::string data_path = o.get_string("data_path", "");
    const std::array<std::vector<std::string>, 3> paths = {
        o.get_strings("train_data_paths"), o.get_strings("valid_data_paths"), o.get_strings("test_data_paths")};
    const std::array<std::string, 3> weight_keys = {"train_data_weights", "valid_data_weights", "test_data_weights"};
    const std::array<std::string, 3> path_keys = {"train_data_paths", "valid_data_paths", "test_data_paths"};
    std::array<std::vector<double>, 3> weights;
    for (int i = 0; i < 3; ++i) weights[i] = get_weights(o, weight_keys[i]);
    const std::string split = o.get_string("split", kDefaultSplit);
    const bool by_docs = o.get_bool("weight_by_num_documents", false);
    const double alpha = o.get_double("weighted_sampler_alpha", 1.0, 0.0, 1e6);
    eod_mask_loss_ = o.get_bool("eod_mask_loss", false);
    eod_token_id_ = o.get_int("eod_token_id", -1, 0, std::numeric_limits<std::int32_t>::max());
    const bool check_ids = o.get_bool("check_token_ids", true);
    o.reject_unknown();

    // ---- options that contradict each other.
    const bool listed = !paths[0].empty() || !paths[1].empty() || !paths[2].empty();
    if (!data_path.empty() && listed)
      throw Error(o.where("data_path") +
                  ": give either data_path (one dataset, divided by `split`) or "
                  "train/valid/test_data_paths, not both");
    if (data_path.empty() && !listed)
      throw Error(o.table() +
                  ": no data: set data_path = \"PREFIX\" (PREFIX.bin/PREFIX.idx) or "
                  "train_data_paths/valid_data_paths/test_data_paths");
    if (listed && o.has("split"))
      throw Error(o.where("split") +
                  ": split divides data_path; with train/valid/test_data_paths each list is "
                  "its split");
    for (int i = 0; i < 3; ++i) {
      if (weights[i].empty()) continue;
      if (data_path.size())
        throw Error(o.where(weight_keys[i]) + ": weights apply to " + path_keys[i] + ", not to data_path");
      if (by_docs)
        throw Error(o.where(weight_keys[i]) + ": weight_by_num_documents computes the weights; do not give them too");
      if (weights[i].size() != paths[i].size())
        throw Error(o.where(weight_keys[i]) + ": " + std::to_string(weights[i].size()) + " weights for " +
                    std::to_string(paths[i].size()) + " paths in " + path_keys[i]);
    }
    if ((by_docs || o.has("weighted_sampler_alpha")) && !listed)
      throw Error(o.where(by_docs ? "weight_by_num_documents" : "weighted_sampler_alpha") +
                  ": applies to train/valid/test_data_paths only");
    if (eod_mask_loss_ && eod_token_id_ < 0)
      throw Error(o.where("eod_mask_loss") + ": eod_mask_loss needs eod_token_id, the id of the end-of-document token");

    // ---- the context from the trainer.
    check(ctx.seq_length >= 1 && ctx.seq_length < std::numeric_limits<std::int32_t>::max(),
          "mmap data: seq_length must be in [1, 2^31 - 1), got " + std::to_string(ctx.seq_length));
    check(ctx.micro_batch_size >= 1,
          "mmap data: micro_batch_size must be at least 1, got " + std::to_string(ctx.micro_batch_size));
    check(ctx.vocab_size >= 1, "mmap data: vocab_size must be at least 1, got " + std::to_string(ctx.vocab_size));
    check(ctx.dp_size >= 1 && ctx.dp_rank >= 0 && ctx.dp_rank < ctx.dp_size,
          "mmap data: data-parallel rank " + std::to_string(ctx.dp_rank) + " is not in [0, " +
              std::to_string(ctx.dp_size) + ")");
    check(ctx.seed <= 0xffffffffULL, "mmap data: seed " + std::to_string(ctx.seed) +
                                         " must be below 2^32 (GPT-NeoX seeds numpy's RandomState with it)");
    const std::array<std::int64_t, 3> requested = {ctx.train_samples, ctx.valid_samples, ctx.test_samples};
    for (int i = 0; i < 3; ++i)
      check(requested[i] >= 0,
            std::string("mmap data: negative number of ") + split_name(static_cast<Split>(i)) + " samples");
    const auto seed = static_cast<std::uint32_t>(ctx.seed);

    if (!data_path.empty()) {
      auto ds = open(data_path, o.where("data_path"), check_ids);
      const std::string split_where = o.has("split") ? o.where("split") : "the default; set " + o.table() + ".split";
      std::array<std::int64_t, 4> bounds{};
      try {
        bounds = gpt2::split_boundaries(split, ds->num_items());
      } catch (const Error& e) {
        throw Error(std::string(e.what()) + " (" + split_where + ")");
      }
      for (int i = 0; i < 3; ++i) {
        SplitData& s = splits_[static_cast<std::size_t>(i)];
        const char* name = split_name(static_cast<Split>(i));
        s.requested = requested[i];
        const std::int64_t b = bounds[static_cast<std::size_t>(i)];
        const std::int64_t e = bounds[static_cast<std::size_t>(i) + 1];
        s.origin = "documents [" + std::to_string(b) + ", " + std::to_string(e) + ") of " + data_path + " by split \"" +
                   split + "\"";
        if (e <= b) {
          if (s.requested > 0)
            throw Error("mmap data: the " + std::string(name) + " split must supply " + std::to_string(s.requested) +
                        " samples but has no documents: split \"" + split + "\" gives it documents [" +
                        std::to_string(b) + ", " + std::to_string(e) + ") of the " + std::to_string(ds->num_items()) +
                        " documents in " + data_path + " (" + split_where +
                        "); give it a share of the documents or draw no samples from it");
          continue;
        }
        s.source = build_part(ds, b, e, s.requested, seed, name);
      }
    } else {
      for (int i = 0; i < 3; ++i) {
        SplitData& s = splits_[static_cast<std::size_t>(i)];
        const char* name = split_name(static_cast<Split>(i));
        s.requested = requested[i];
        const auto& list = paths[static_cast<std::size_t>(i)];
        s.origin = path_keys[static_cast<std::size_t>(i)];
        if (list.empty()) {
          if (s.requested > 0)
            throw Error("mmap data: the " + std::string(name) + " split must supply " + std::to_string(s.requested) +
                        " samples but " + path_keys[i] + " is empty (" + o.table() + ")");
          continue;
        }
        std::vector<std::shared_ptr<const IndexedDataset>> sets;
        for (const auto& p : list) sets.push_back(open(p, o.where(path_keys[i]), check_ids));
        std::vector<double> w = weights[static_cast<std::size_t>(i)];
        if (by_docs) {
          std::vector<std::int64_t> docs;
          for (const auto& d : sets) docs.push_back(d->num_items());
          w = gpt2::weights_by_num_docs(docs, alpha);
        } else if (w.empty()) {
          w.assign(list.size(), 1.0);
        }
        gpt2::WeightedSamples ws;
        try {
          ws = gpt2::normalized_weights_and_num_samples(w, s.requested);
        } catch (const Error& e) {
          throw Error(o.where(weight_keys[i]) + ": " + e.what());
        }
        std::vector<std::shared_ptr<const SampleSource>> parts;
        for (std::size_t k = 0; k < sets.size(); ++k)
          parts.push_back(build_part(sets[k], 0, sets[k]->num_items(), ws.num_samples[k], seed, name));
        s.source = std::make_shared<gpt2::BlendedDataset>(std::move(parts), ws.weights);
      }
    }
    for (int i = 0; i < 3; ++i) {
      const SplitData& s = splits_[static_cast<std::size_t>(i)];
      if (s.requested > 0 && s.source && s.source->size() == 0)
        throw Error("mmap data: the " + std::string(split_name(static_cast<Split>(i))) + " split must supply " +
                    std::to_string(s.requested) + " samples but its data (" + s.origin +
                    ") is too small for one sample of " + std::to_string(ctx.seq_length + 1) + " tokens");
    }
    buffer_.resize(static_cast<std::size_t>(ctx.seq_length + 1));
  }

  std::string name() const override { return "mmap"; }

  std::int64_t num_samples(Split split) const override {
    const SplitData& s = at(split);
    return s.source ? s.source->size() : 0;
  }

  Batch next(Split split) override {
    SplitData& s = at(split);
    const std::int64_t len = s.source ? s.source->size() : 0;
    if (len == 0)
      throw Error("mmap data: the " + std::string(split_name(split)) + " split has no samples (" +
                  (s.source ? s.origin : "no data configured for it") + ")");
    const std::int64_t B = ctx_.micro_batch_size;
    const std::int64_t T = ctx_.seq_length;
    const std::int64_t group = B * ctx_.dp_size;
    const std::int64_t period = len >= group ? len - len % group : len;
    Batch batch;
    batch.input_ids = Tensor::zeros_host({B, T}, DType::i64);
    batch.labels = Tensor::zeros_host({B, T}, DType::i64);
    batch.loss_mask = Tensor::zeros_host({B, T}, DType::f32);
    auto* in = batch.input_ids.ptr<std::int64_t>();
    auto* lab = batch.labels.ptr<std::int64_t>();
    auto* mask = batch.loss_mask.ptr<float>();
    const std::int64_t base = s.position % period;
    for (std::int64_t b = 0; b < B; ++b) {
      const std::int64_t g = (base + ctx_.dp_rank * B + b) % period;
      s.source->sample(g, buffer_.data());
      for (std::int64_t t = 0; t < T; ++t) {
        in[b * T + t] = buffer_[static_cast<std::size_t>(t)];
        lab[b * T + t] = buffer_[static_cast<std::size_t>(t) + 1];
        mask[b * T + t] = (eod_mask_loss_ && buffer_[static_cast<std::size_t>(t)] == eod_token_id_) ? 0.0f : 1.0f;
      }
    }
    s.position += group;
    return batch;
  }

  std::int64_t position(Split split) const override { return at(split).position; }

  void seek(Split split, std::int64_t position) override {
    if (position < 0)
      throw Error("mmap data: cannot seek the " + std::string(split_name(split)) + " split to a negative position " +
                  std::to_string(position));
    at(split).position = position;
  }

 private:
  SplitData& at(Split s) { return splits_[index_of(s)]; }
  const SplitData& at(Split s) const { return splits_[index_of(s)]; }
  static std::size_t index_of(Split s) {
    const auto i = static_cast<std::size_t>(s);
    if (i > 2) throw Error("mmap data: unknown split " + std::to_string(i));
    return i;
  }

  std::shared_ptr<const IndexedDataset> open(const std::string& prefix, const std::string& where, bool check_ids) {
    auto it = open_.find(prefix);
    if (it != open_.end()) return it->second;
    std::shared_ptr<const IndexedDataset> ds;
    try {
      ds = std::make_shared<const IndexedDataset>(IndexedDataset::open(prefix));
    } catch (const Error& e) {
      const bool has_ext = prefix.size() > 4 && (prefix.ends_with(".bin") || prefix.ends_with(".idx"));
      throw Error(std::string(e.what()) + " (" + where + ")" +
                  (has_ext ? "; give the prefix without the .bin/.idx extension" : ""));
    }
    // uint16 ids are all below a vocabulary of 65536 or more: no scan needed.
    const bool covered = ds->dtype() == DType::u16 && ctx_.vocab_size > 0xffff;
    if (check_ids && !covered) {
      const std::int64_t m = ds->max_token();
      if (m >= ctx_.vocab_size)
        throw Error(prefix + ".bin: token id " + std::to_string(m) + " is not below the vocabulary size " +
                    std::to_string(ctx_.vocab_size) +
                    "; the data was tokenized for a larger vocabulary than the model's");
    }
    open_[prefix] = ds;
    return ds;
  }

  std::shared_ptr<const SampleSource> build_part(const std::shared_ptr<const IndexedDataset>& ds, std::int64_t begin,
                                                 std::int64_t end, std::int64_t num_samples, std::uint32_t seed,
                                                 const char* split) {
    if (end <= begin) throw Error(ds->prefix() + ": no documents for the " + std::string(split) + " split");
    try {
      return std::make_shared<gpt2::Gpt2Dataset>(ds, begin, end, num_samples, ctx_.seq_length, seed);
    } catch (const Error& e) {
      throw Error(ds->prefix() + " (" + split + " split): " + e.what());
    }
  }

  DataContext ctx_;
  bool eod_mask_loss_ = false;
  std::int64_t eod_token_id_ = -1;
  std::array<SplitData, 3> splits_;
  std::map<std::string, std::shared_ptr<const IndexedDataset>> open_;
  std::vector<std::int32_t> buffer_;
};

DataSource* make_mmap_data(const Options& options, const DataContext& context) {
  try {
    return new MmapDataSource(options, context);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(std::string("mmap data: ") + e.what());
  }
}

}  // namespace
}  // namespace neox

NEOX_PLUGIN(data, "mmap", "1.0",
            "GPT-NeoX indexed datasets (.bin/.idx): GPT2Dataset samples, splits and blends as "
            "GPT-NeoX builds them",
            &neox::make_mmap_data)
