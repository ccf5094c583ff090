// SPDX-License-Identifier: Apache-2.0
// GPT-NeoX's sample construction over Megatron indexed datasets, rebuilt in
// memory: the numbers (doc_idx, sample_idx, shuffle_idx, blending indices)
// are the ones GPT-NeoX's megatron/data code computes and caches as .npy
// files, so a run sees the same token sequences in the same order.
//
// Internal to the `mmap` data plugin (static library neox_gpt2_index); the
// tests include it to compare every index with GPT-NeoX's.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "neox/io/indexed_dataset.h"

namespace neox::gpt2 {

// numpy's legacy RandomState for an integer seed: MT19937 seeded with
// init_genrand(seed), and shuffle() as RandomState.shuffle does it on a 1-D
// array (for i from n-1 down to 1, swap i with a uniform j in [0, i] drawn by
// masked rejection sampling, "random_interval").
class NumpyRandomState {
 public:
  explicit NumpyRandomState(std::uint32_t seed);
  std::uint32_t next_uint32();
  std::uint64_t next_uint64();  // high word first, as numpy's mt19937_next64
  // Uniform in [0, max], numpy's random_interval.
  std::uint64_t random_interval(std::uint64_t max);
  template <typename T>
  void shuffle(T* data, std::int64_t n) {
    for (std::int64_t i = n - 1; i > 0; --i) {
      const auto j = static_cast<std::int64_t>(random_interval(static_cast<std::uint64_t>(i)));
      T tmp = data[i];
      data[i] = data[j];
      data[j] = tmp;
    }
  }

 private:
  void generate();
  std::uint32_t key_[624];
  int pos_;
};

// A vector of indices stored as int32 when every value fits (as GPT-NeoX
// stores them), else int64.
class IndexArray {
 public:
  IndexArray() = default;
  IndexArray(std::int64_t n, bool wide);
  std::int64_t size() const { return n_; }
  bool wide() const { return wide_flag_; }
  std::int64_t operator[](std::int64_t i) const {
    return wide_flag_ ? wide_[static_cast<std::size_t>(i)] : narrow_[static_cast<std::size_t>(i)];
  }
  void set(std::int64_t i, std::int64_t v) {
    if (wide_flag_)
      wide_[static_cast<std::size_t>(i)] = v;
    else
      narrow_[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(v);
  }
  void shuffle(NumpyRandomState& rng);

 private:
  std::int64_t n_ = 0;
  bool wide_flag_ = false;
  std::vector<std::int32_t> narrow_;
  std::vector<std::int64_t> wide_;
};

// get_train_valid_test_split_: the split string ("969,30,1", "80/15/5",
// "100") to document boundaries [0, a, b, size]; the documents of split k
// are [bounds[k], bounds[k+1]) (empty when the end is not above the start).
// Throws neox::Error for a malformed string.
std::array<std::int64_t, 4> split_boundaries(const std::string& split, std::int64_t size);

// _num_epochs: epochs needed so that (epochs * tokens_per_epoch - 1) /
// seq_length >= num_samples (at least 1).
std::int64_t num_epochs(std::int64_t tokens_per_epoch, std::int64_t seq_length, std::int64_t num_samples);

// The three index mappings of a GPT2Dataset (pack_impl "packed").
struct Gpt2Index {
  std::int64_t tokens_per_epoch = 0;
  std::int64_t num_epochs = 0;
  std::vector<std::int32_t> doc_idx;  // documents, num_epochs times, shuffled
  IndexArray sample_idx;              // (num_samples + 1) rows of (doc_idx position, offset)
  IndexArray shuffle_idx;             // a permutation of [0, num_samples)
  std::int64_t sample_rows() const { return sample_idx.size() / 2; }
  // GPT-NeoX's len(dataset): min(len(shuffle_idx) - 1, rows(sample_idx) - 1).
  std::int64_t length() const;
};

// _build_index_mappings for the documents [doc_begin, doc_end) of a dataset
// with item sizes `sizes`. Throws neox::Error when the documents hold no
// tokens or the arguments are out of range.
Gpt2Index build_gpt2_index(const std::vector<std::int32_t>& sizes, std::int64_t doc_begin, std::int64_t doc_end,
                           std::int64_t num_samples, std::int64_t seq_length, std::uint32_t seed);

// Anything that yields samples of seq_length + 1 tokens by index.
class SampleSource {
 public:
  virtual ~SampleSource() = default;
  // GPT-NeoX's len(dataset).
  virtual std::int64_t size() const = 0;
  virtual std::int64_t seq_length() const = 0;
  // dataset[idx] (idx >= 0), including GPT-NeoX's wrap of an index past the
  // end (modulo the length); writes seq_length + 1 tokens.
  virtual void sample(std::int64_t idx, std::int32_t* out) const = 0;
};

// GPT2Dataset over documents [doc_begin, doc_end) of one indexed dataset.
class Gpt2Dataset final : public SampleSource {
 public:
  Gpt2Dataset(std::shared_ptr<const IndexedDataset> data, std::int64_t doc_begin, std::int64_t doc_end,
              std::int64_t num_samples, std::int64_t seq_length, std::uint32_t seed);
  std::int64_t size() const override { return length_; }
  std::int64_t seq_length() const override { return seq_length_; }
  void sample(std::int64_t idx, std::int32_t* out) const override;
  const Gpt2Index& index() const { return index_; }
  const IndexedDataset& data() const { return *data_; }

 private:
  std::shared_ptr<const IndexedDataset> data_;
  std::int64_t seq_length_;
  Gpt2Index index_;
  std::int64_t length_;
};

// Python's sum() of floats (left to right) and numpy's np.sum of a float64
// array (pairwise summation), bit for bit.
double python_sum(const std::vector<double>& v);
double numpy_sum(const std::vector<double>& v);

// get_normalized_weights_and_num_samples: weights / sum and, per dataset,
// ceil(num_samples * weight * 1.005). Throws when a weight is negative or not
// finite, or all are zero.
struct WeightedSamples {
  std::vector<double> weights;
  std::vector<std::int64_t> num_samples;
};
WeightedSamples normalized_weights_and_num_samples(const std::vector<double>& weights, std::int64_t num_samples);

// weights_by_num_docs (GPT-NeoX's weight_by_num_documents): p(L) ~ |L|^alpha,
// times (1 - |L| / total), normalised.
std::vector<double> weights_by_num_docs(const std::vector<std::int64_t>& num_docs, double alpha);

// helpers.cpp build_blending_indices: for each of `size` samples, the dataset
// whose achieved share lags its weight most, and the running sample count of
// that dataset.
void build_blending_indices(const std::vector<double>& weights, std::int64_t size,
                            std::vector<std::uint8_t>& dataset_index, std::vector<std::int64_t>& dataset_sample_index);

// BlendableDataset: its length is the sum of the parts' lengths; the weights
// are normalised again with numpy's sum, as BlendableDataset does.
class BlendedDataset final : public SampleSource {
 public:
  BlendedDataset(std::vector<std::shared_ptr<const SampleSource>> parts, const std::vector<double>& weights);
  std::int64_t size() const override { return size_; }
  std::int64_t seq_length() const override { return parts_.front()->seq_length(); }
  void sample(std::int64_t idx, std::int32_t* out) const override;
  const std::vector<std::uint8_t>& dataset_index() const { return dataset_index_; }
  const std::vector<std::int64_t>& dataset_sample_index() const { return dataset_sample_index_; }
  const SampleSource& part(std::size_t i) const { return *parts_[i]; }

 private:
  std::vector<std::shared_ptr<const SampleSource>> parts_;
  std::int64_t size_ = 0;
  std::vector<std::uint8_t> dataset_index_;
  std::vector<std::int64_t> dataset_sample_index_;
};

}  // namespace neox::gpt2
