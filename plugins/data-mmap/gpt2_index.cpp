// SPDX-License-Identifier: Apache-2.0
// GPT-NeoX's index mappings and blending, computed in memory. Every step
// follows megatron/data (gpt2_dataset.py, blendable_dataset.py,
// data_utils.py, helpers.cpp) and numpy's legacy RandomState so that the
// integers come out identical; see gpt2_index.h.
#include "gpt2_index.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "neox/error.h"

namespace neox::gpt2 {

// ------------------------------------------------------------ MT19937

namespace {
constexpr int kN = 624;
constexpr int kM = 397;
constexpr std::uint32_t kMatrixA = 0x9908b0dfU;
constexpr std::uint32_t kUpper = 0x80000000U;
constexpr std::uint32_t kLower = 0x7fffffffU;
}  // namespace

NumpyRandomState::NumpyRandomState(std::uint32_t seed) {
  // init_genrand, which numpy's legacy seeding uses for an integer seed.
  for (int i = 0; i < kN; ++i) {
    key_[i] = seed;
    seed = 1812433253U * (seed ^ (seed >> 30)) + static_cast<std::uint32_t>(i + 1);
  }
  pos_ = kN;
}

void NumpyRandomState::generate() {
  for (int i = 0; i < kN; ++i) {
    const std::uint32_t y = (key_[i] & kUpper) | (key_[(i + 1) % kN] & kLower);
    key_[i] = key_[(i + kM) % kN] ^ (y >> 1) ^ ((y & 1U) ? kMatrixA : 0U);
  }
  pos_ = 0;
}

std::uint32_t NumpyRandomState::next_uint32() {
  if (pos_ == kN) generate();
  std::uint32_t y = key_[pos_++];
  y ^= y >> 11;
  y ^= (y << 7) & 0x9d2c5680U;
  y ^= (y << 15) & 0xefc60000U;
  y ^= y >> 18;
  return y;
}

std::uint64_t NumpyRandomState::next_uint64() {
  const std::uint64_t hi = next_uint32();
  const std::uint64_t lo = next_uint32();
  return (hi << 32) | lo;
}

std::uint64_t NumpyRandomState::random_interval(std::uint64_t max) {
  if (max == 0) return 0;
  // The smallest all-ones mask covering max; draws above max are rejected.
  std::uint64_t mask = max;
  mask |= mask >> 1;
  mask |= mask >> 2;
  mask |= mask >> 4;
  mask |= mask >> 8;
  mask |= mask >> 16;
  mask |= mask >> 32;
  std::uint64_t value;
  if (max <= 0xffffffffULL) {
    while ((value = (next_uint32() & mask)) > max) {
    }
  } else {
    while ((value = (next_uint64() & mask)) > max) {
    }
  }
  return value;
}

// ------------------------------------------------------------ IndexArray

IndexArray::IndexArray(std::int64_t n, bool wide) : n_(n), wide_flag_(wide) {
  if (wide)
    wide_.assign(static_cast<std::size_t>(n), 0);
  else
    narrow_.assign(static_cast<std::size_t>(n), 0);
}

void IndexArray::shuffle(NumpyRandomState& rng) {
  if (wide_flag_)
    rng.shuffle(wide_.data(), n_);
  else
    rng.shuffle(narrow_.data(), n_);
}

// ------------------------------------------------------------ split string

namespace {

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\n\r\f\v");
  if (b == std::string::npos) return {};
  const auto e = s.find_last_not_of(" \t\n\r\f\v");
  return s.substr(b, e - b + 1);
}

}  // namespace

std::array<std::int64_t, 4> split_boundaries(const std::string& split, std::int64_t size) {
  const std::string what = "split \"" + split + "\"";
  char sep = 0;
  if (split.find(',') != std::string::npos)
    sep = ',';
  else if (split.find('/') != std::string::npos)
    sep = '/';
  std::vector<std::string> parts;
  if (sep) {
    std::size_t start = 0;
    while (true) {
      const auto at = split.find(sep, start);
      parts.push_back(split.substr(start, at == std::string::npos ? std::string::npos : at - start));
      if (at == std::string::npos) break;
      start = at + 1;
    }
  } else {
    parts.push_back(split);
  }
  std::vector<double> w;
  for (const auto& raw : parts) {
    const std::string p = trim(raw);
    char* end = nullptr;
    errno = 0;
    const double v = p.empty() ? 0.0 : std::strtod(p.c_str(), &end);
    if (p.empty() || end != p.c_str() + p.size() || !std::isfinite(v) || v < 0)
      throw Error(what + ": \"" + raw +
                  "\" is not a non-negative number (expected e.g. \"969,30,1\": the train, "
                  "validation and test shares of the documents)");
    w.push_back(v);
  }
  while (w.size() < 3) w.push_back(0.0);
  w.resize(3);
  const double sum = python_sum(w);
  if (!(sum > 0.0)) throw Error(what + ": the shares sum to 0");
  std::array<std::int64_t, 4> b{0, 0, 0, 0};
  for (int i = 0; i < 3; ++i) {
    const double share = w[static_cast<std::size_t>(i)] / sum;
    // Python's round(): half to even, which nearbyint does in the default mode.
    b[static_cast<std::size_t>(i + 1)] =
        b[static_cast<std::size_t>(i)] + static_cast<std::int64_t>(std::nearbyint(share * static_cast<double>(size)));
  }
  const std::int64_t diff = b[3] - size;
  for (int i = 1; i < 4; ++i) b[static_cast<std::size_t>(i)] -= diff;
  return b;
}

// ------------------------------------------------------------ index mappings

std::int64_t num_epochs(std::int64_t tokens_per_epoch, std::int64_t seq_length, std::int64_t num_samples) {
  if (tokens_per_epoch <= 0 || seq_length <= 0 || num_samples < 0)
    throw Error("num_epochs: tokens per epoch and seq_length must be positive");
  // The smallest epochs >= 1 with (epochs * tokens - 1) / seq_length >= num_samples,
  // i.e. epochs * tokens >= num_samples * seq_length + 1.
  if (num_samples > (std::numeric_limits<std::int64_t>::max() - 1) / seq_length)
    throw Error("num_epochs: " + std::to_string(num_samples) + " samples of " + std::to_string(seq_length) +
                " tokens overflow a 64-bit count");
  const std::int64_t need = num_samples * seq_length + 1;
  return std::max<std::int64_t>(1, (need + tokens_per_epoch - 1) / tokens_per_epoch);
}

std::int64_t Gpt2Index::length() const {
  return std::max<std::int64_t>(0, std::min(shuffle_idx.size() - 1, sample_rows() - 1));
}

Gpt2Index build_gpt2_index(const std::vector<std::int32_t>& sizes, std::int64_t doc_begin, std::int64_t doc_end,
                           std::int64_t num_samples, std::int64_t seq_length, std::uint32_t seed) {
  const auto n_items = static_cast<std::int64_t>(sizes.size());
  if (doc_begin < 0 || doc_end > n_items || doc_end <= doc_begin)
    throw Error("documents [" + std::to_string(doc_begin) + ", " + std::to_string(doc_end) +
                ") are empty or outside the " + std::to_string(n_items) + " documents");
  if (doc_end > std::numeric_limits<std::int32_t>::max())
    throw Error(std::to_string(doc_end) + " documents: GPT-NeoX indexes documents with int32");
  if (seq_length < 1) throw Error("seq_length must be at least 1, got " + std::to_string(seq_length));
  if (num_samples < 0) throw Error("negative number of samples " + std::to_string(num_samples));

  Gpt2Index ix;
  for (std::int64_t d = doc_begin; d < doc_end; ++d) ix.tokens_per_epoch += sizes[static_cast<std::size_t>(d)];
  if (ix.tokens_per_epoch < 2)
    throw Error("documents [" + std::to_string(doc_begin) + ", " + std::to_string(doc_end) + ") hold " +
                std::to_string(ix.tokens_per_epoch) + " tokens; at least 2 are needed to make a sample");
  ix.num_epochs = num_epochs(ix.tokens_per_epoch, seq_length, num_samples);
  const std::int64_t n_docs = doc_end - doc_begin;
  if (ix.num_epochs > (std::int64_t{1} << 40) / n_docs)
    throw Error(std::to_string(num_samples) + " samples need " + std::to_string(ix.num_epochs) + " epochs over " +
                std::to_string(n_docs) + " documents: too many to index");

  // _build_doc_idx: the documents once per epoch, then one shuffle of all.
  NumpyRandomState rng(seed);
  ix.doc_idx.resize(static_cast<std::size_t>(ix.num_epochs * n_docs));
  for (std::int64_t e = 0; e < ix.num_epochs; ++e)
    for (std::int64_t d = 0; d < n_docs; ++d)
      ix.doc_idx[static_cast<std::size_t>(e * n_docs + d)] = static_cast<std::int32_t>(doc_begin + d);
  rng.shuffle(ix.doc_idx.data(), static_cast<std::int64_t>(ix.doc_idx.size()));

  // build_sample_idx: sample i is tokens [start_i, start_{i+1}] of the
  // concatenated documents, each (seq_length + 1) long, sharing one token with
  // the next sample.
  const std::int64_t total = (ix.num_epochs * ix.tokens_per_epoch - 1) / seq_length;
  const auto n_doc_idx = static_cast<std::int64_t>(ix.doc_idx.size());
  ix.sample_idx = IndexArray(2 * (total + 1), n_doc_idx >= std::numeric_limits<std::int32_t>::max());
  std::int64_t doc_pos = 0;
  std::int64_t doc_offset = 0;
  for (std::int64_t s = 1; s <= total; ++s) {
    std::int64_t remaining = seq_length + 1;
    while (remaining != 0) {
      if (doc_pos >= n_doc_idx) throw Error("internal error: sample index ran past the documents");
      const std::int64_t doc_length =
          sizes[static_cast<std::size_t>(ix.doc_idx[static_cast<std::size_t>(doc_pos)])] - doc_offset;
      remaining -= doc_length;
      if (remaining <= 0) {
        doc_offset += remaining + doc_length - 1;
        remaining = 0;
      } else {
        ++doc_pos;
        doc_offset = 0;
      }
    }
    ix.sample_idx.set(2 * s, doc_pos);
    ix.sample_idx.set(2 * s + 1, doc_offset);
  }

  // _build_shuffle_idx: a permutation of the samples, from the same generator.
  ix.shuffle_idx = IndexArray(total, total >= std::numeric_limits<std::int32_t>::max());
  for (std::int64_t i = 0; i < total; ++i) ix.shuffle_idx.set(i, i);
  ix.shuffle_idx.shuffle(rng);
  return ix;
}

Gpt2Dataset::Gpt2Dataset(std::shared_ptr<const IndexedDataset> data, std::int64_t doc_begin, std::int64_t doc_end,
                         std::int64_t num_samples, std::int64_t seq_length, std::uint32_t seed)
    : data_(std::move(data)),
      seq_length_(seq_length),
      index_(build_gpt2_index(data_->sizes(), doc_begin, doc_end, num_samples, seq_length, seed)),
      length_(index_.length()) {}

void Gpt2Dataset::sample(std::int64_t idx, std::int32_t* out) const {
  if (idx < 0) throw Error(data_->prefix() + ": negative sample index " + std::to_string(idx));
  // GPT-NeoX indexes shuffle_idx directly (it has one entry more than the
  // length) and only an IndexError past that wraps modulo the length.
  if (idx >= index_.shuffle_idx.size()) {
    if (length_ == 0) throw Error(data_->prefix() + ": sample " + std::to_string(idx) + " of a dataset of length 0");
    idx %= length_;
  }
  const std::int64_t s = index_.shuffle_idx[idx];
  const std::int64_t first = index_.sample_idx[2 * s];
  const std::int64_t first_offset = index_.sample_idx[2 * s + 1];
  const std::int64_t last = index_.sample_idx[2 * s + 2];
  const std::int64_t last_offset = index_.sample_idx[2 * s + 3];
  const std::int64_t want = seq_length_ + 1;
  std::int64_t have = 0;
  auto append = [&](std::int64_t pos, std::int64_t offset, std::int64_t count) {
    const std::int64_t item = index_.doc_idx[static_cast<std::size_t>(pos)];
    if (count < 0) count = data_->sizes()[static_cast<std::size_t>(item)] - offset;
    count = std::min(count, want - have);  // GPT-NeoX truncates an overlong sample
    if (count > 0) data_->read(item, offset, count, out + have);
    have += std::max<std::int64_t>(count, 0);
  };
  if (first == last) {
    append(first, first_offset, last_offset - first_offset + 1);
  } else {
    append(first, first_offset, -1);
    for (std::int64_t p = first + 1; p < last; ++p) append(p, 0, -1);
    append(last, 0, last_offset + 1);
  }
  // ... and pads a short one with -100 (never the case with packed samples).
  for (; have < want; ++have) out[have] = -100;
}

// ------------------------------------------------------------ weights and blending

double python_sum(const std::vector<double>& v) {
  double s = 0.0;
  for (double x : v) s += x;
  return s;
}

namespace {
// numpy's pairwise_sum for float64 (blocks of 8 partial sums up to 128
// elements, halves above).
double pairwise_sum(const double* a, std::int64_t n) {
  if (n < 8) {
    double res = 0.0;
    for (std::int64_t i = 0; i < n; ++i) res += a[i];
    return res;
  }
  if (n <= 128) {
    double r[8];
    for (int j = 0; j < 8; ++j) r[j] = a[j];
    std::int64_t i = 8;
    for (; i < n - (n % 8); i += 8)
      for (int j = 0; j < 8; ++j) r[j] += a[i + j];
    double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) res += a[i];
    return res;
  }
  std::int64_t n2 = n / 2;
  n2 -= n2 % 8;
  return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2);
}
}  // namespace

double numpy_sum(const std::vector<double>& v) {
  // np.add.reduce starts from the identity 0.0 and adds the pairwise sum.
  return 0.0 + pairwise_sum(v.data(), static_cast<std::int64_t>(v.size()));
}

WeightedSamples normalized_weights_and_num_samples(const std::vector<double>& weights, std::int64_t num_samples) {
  for (double w : weights)
    if (!std::isfinite(w) || w < 0) throw Error("data weight " + std::to_string(w) + " must be a finite number >= 0");
  const double sum = python_sum(weights);
  if (!(sum > 0.0)) throw Error("data weights sum to 0; at least one must be positive");
  WeightedSamples out;
  for (double w : weights) {
    const double nw = w / sum;
    out.weights.push_back(nw);
    // The 1.005 gives a blend room when its rounding favours one dataset.
    out.num_samples.push_back(static_cast<std::int64_t>(std::ceil(static_cast<double>(num_samples) * nw * 1.005)));
  }
  return out;
}

std::vector<double> weights_by_num_docs(const std::vector<std::int64_t>& num_docs, double alpha) {
  std::int64_t total_docs = 0;
  for (auto n : num_docs) total_docs += n;
  if (total_docs <= 0) throw Error("weight_by_num_documents: the datasets hold no documents");
  std::vector<double> unbiased, probs, weights;
  for (auto n : num_docs) unbiased.push_back(static_cast<double>(n) / static_cast<double>(total_docs));
  for (double p : unbiased) probs.push_back(std::pow(p, alpha));
  double total = python_sum(probs);
  for (double& p : probs) p = p / total;
  for (std::size_t i = 0; i < probs.size(); ++i) weights.push_back(probs[i] * (1.0 - unbiased[i]));
  total = python_sum(weights);
  if (!(total > 0.0))
    throw Error("weight_by_num_documents: all weights are 0 (a single dataset holding every document?)");
  for (double& w : weights) w = w / total;
  return weights;
}

void build_blending_indices(const std::vector<double>& weights, std::int64_t size,
                            std::vector<std::uint8_t>& dataset_index, std::vector<std::int64_t>& dataset_sample_index) {
  const std::size_t n = weights.size();
  dataset_index.assign(static_cast<std::size_t>(size), 0);
  dataset_sample_index.assign(static_cast<std::size_t>(size), 0);
  std::vector<std::int64_t> current(n, 0);
  for (std::int64_t s = 0; s < size; ++s) {
    const double at = std::max(static_cast<double>(s), 1.0);
    std::size_t best = 0;
    double best_error = weights[0] * at - static_cast<double>(current[0]);
    for (std::size_t d = 1; d < n; ++d) {
      const double error = weights[d] * at - static_cast<double>(current[d]);
      if (error > best_error) {
        best_error = error;
        best = d;
      }
    }
    dataset_index[static_cast<std::size_t>(s)] = static_cast<std::uint8_t>(best);
    dataset_sample_index[static_cast<std::size_t>(s)] = current[best];
    ++current[best];
  }
}

BlendedDataset::BlendedDataset(std::vector<std::shared_ptr<const SampleSource>> parts,
                               const std::vector<double>& weights)
    : parts_(std::move(parts)) {
  if (parts_.empty() || parts_.size() != weights.size())
    throw Error("a blend needs as many weights as datasets (" + std::to_string(parts_.size()) + " datasets, " +
                std::to_string(weights.size()) + " weights)");
  if (parts_.size() >= 255) throw Error("a blend holds at most 254 datasets");
  for (const auto& p : parts_) size_ += p->size();
  const double sum = numpy_sum(weights);
  if (!(sum > 0.0)) throw Error("blend weights sum to 0");
  std::vector<double> w;
  for (double x : weights) w.push_back(x / sum);
  build_blending_indices(w, size_, dataset_index_, dataset_sample_index_);
}

void BlendedDataset::sample(std::int64_t idx, std::int32_t* out) const {
  if (idx < 0) throw Error("negative blend sample index " + std::to_string(idx));
  if (size_ == 0) throw Error("sample " + std::to_string(idx) + " of an empty blend");
  idx %= size_;
  const auto i = static_cast<std::size_t>(idx);
  parts_[dataset_index_[i]]->sample(dataset_sample_index_[i], out);
}

}  // namespace neox::gpt2
