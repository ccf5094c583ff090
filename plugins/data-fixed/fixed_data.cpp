// SPDX-License-Identifier: Apache-2.0
// data plugin `fixed`: batches stored in a safetensors file, served in order.
//
// Options: `path` (required), a safetensors file holding `input_ids` and
// `labels`, [N, T] integers (stored as I64, I32 or U16), and optionally
// `loss_mask`, [N, T] floats (absent: all ones); `valid_path` and
// `test_path` give other files for those splits (default: `path`).
// T must equal seq_length. Rows are served in order and wrap around after
// the last one; with data parallelism rank r takes rows [r*B, (r+1)*B) of
// each group of dp_size*B consecutive rows, and position() counts the rows
// the whole group has consumed.
#include <array>
#include <limits>
#include <map>
#include <memory>
#include <string>

#include "neox/data_source.h"
#include "neox/error.h"
#include "neox/io/safetensors.h"
#include "neox/options.h"
#include "neox/plugin.h"

namespace neox {
namespace {

struct FixedData {
  std::string path;
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  Tensor input_ids;  // i64 [N, T]
  Tensor labels;     // i64 [N, T]
  Tensor loss_mask;  // f32 [N, T]
};

bool is_int(DType t) { return t == DType::i64 || t == DType::i32 || t == DType::u16; }
bool is_float(DType t) { return t == DType::f32 || t == DType::f64 || t == DType::f16 || t == DType::bf16; }

std::shared_ptr<const FixedData> load(const std::string& path, const std::string& where, const DataContext& ctx) {
  SafeTensorsFile file;
  try {
    file = SafeTensorsFile::open(path);
  } catch (const Error& e) {
    throw Error(std::string(e.what()) + " (" + where + ")");
  }
  auto data = std::make_shared<FixedData>();
  data->path = path;
  for (const char* name : {"input_ids", "labels"}) {
    if (!file.contains(name))
      throw Error(path + ": no tensor '" + name +
                  "'; a fixed-data file holds input_ids and labels, "
                  "[N, seq_length] integers, and optionally loss_mask (" +
                  where + ")");
    const SafeTensorInfo& info = file.info(name);
    if (!is_int(info.dtype) || info.shape.size() != 2)
      throw Error(path + ": tensor '" + name + "' must be a 2-D integer tensor [N, seq_length], got " +
                  std::string(dtype_name(info.dtype)) + shape_str(info.shape));
  }
  const Shape shape = file.info("input_ids").shape;
  if (file.info("labels").shape != shape)
    throw Error(path + ": labels " + shape_str(file.info("labels").shape) + " and input_ids " + shape_str(shape) +
                " differ in shape");
  data->rows = shape[0];
  data->cols = shape[1];
  if (data->rows < 1) throw Error(path + ": input_ids " + shape_str(shape) + " holds no rows");
  if (data->cols != ctx.seq_length)
    throw Error(path + ": rows of " + std::to_string(data->cols) + " tokens, but seq_length is " +
                std::to_string(ctx.seq_length) + " (input_ids " + shape_str(shape) + ")");
  data->input_ids = file.read("input_ids", DType::i64);
  data->labels = file.read("labels", DType::i64);
  if (file.contains("loss_mask")) {
    const SafeTensorInfo& info = file.info("loss_mask");
    if (!is_float(info.dtype) || info.shape != shape)
      throw Error(path + ": loss_mask must be floats shaped like input_ids " + shape_str(shape) + ", got " +
                  std::string(dtype_name(info.dtype)) + shape_str(info.shape));
    data->loss_mask = file.read("loss_mask", DType::f32);
  } else {
    data->loss_mask = Tensor::zeros_host(shape, DType::f32);
    float* m = data->loss_mask.ptr<float>();
    for (std::int64_t i = 0; i < data->loss_mask.numel(); ++i) m[i] = 1.0f;
  }
  // Ids must index the embedding; labels may be negative (ignored) but not
  // at or above the vocabulary.
  const auto* ids = data->input_ids.ptr<std::int64_t>();
  const auto* lab = data->labels.ptr<std::int64_t>();
  for (std::int64_t i = 0; i < data->input_ids.numel(); ++i) {
    if (ids[i] < 0 || ids[i] >= ctx.vocab_size)
      throw Error(path + ": input_ids[" + std::to_string(i / data->cols) + ", " + std::to_string(i % data->cols) +
                  "] = " + std::to_string(ids[i]) + " is not a token id below the vocabulary size " +
                  std::to_string(ctx.vocab_size));
    if (lab[i] >= ctx.vocab_size)
      throw Error(path + ": labels[" + std::to_string(i / data->cols) + ", " + std::to_string(i % data->cols) + "] = " +
                  std::to_string(lab[i]) + " is not below the vocabulary size " + std::to_string(ctx.vocab_size));
  }
  return data;
}

class FixedDataSource final : public DataSource {
 public:
  FixedDataSource(const Options& o, const DataContext& ctx) : ctx_(ctx) {
    const std::string path = o.get_string("path", "");
    const std::string valid = o.get_string("valid_path", "");
    const std::string test = o.get_string("test_path", "");
    o.reject_unknown();
    if (path.empty())
      throw Error(o.table() +
                  ".path: required: a safetensors file with input_ids and labels "
                  "[N, seq_length]");
    check(ctx.seq_length >= 1, "fixed data: seq_length must be at least 1");
    check(ctx.micro_batch_size >= 1, "fixed data: micro_batch_size must be at least 1");
    check(ctx.vocab_size >= 1, "fixed data: vocab_size must be at least 1");
    check(ctx.dp_size >= 1 && ctx.dp_rank >= 0 && ctx.dp_rank < ctx.dp_size,
          "fixed data: data-parallel rank " + std::to_string(ctx.dp_rank) + " is not in [0, " +
              std::to_string(ctx.dp_size) + ")");
    std::map<std::string, std::shared_ptr<const FixedData>> loaded;
    auto get = [&](const std::string& p, const std::string& key) {
      auto& slot = loaded[p];
      if (!slot) slot = load(p, o.where(key), ctx);
      return slot;
    };
    splits_[0].data = get(path, "path");
    splits_[1].data = valid.empty() ? splits_[0].data : get(valid, "valid_path");
    splits_[2].data = test.empty() ? splits_[0].data : get(test, "test_path");
  }

  std::string name() const override { return "fixed"; }
  std::int64_t num_samples(Split split) const override { return at(split).data->rows; }

  Batch next(Split split) override {
    State& s = at(split);
    const FixedData& d = *s.data;
    const std::int64_t B = ctx_.micro_batch_size;
    const std::int64_t T = d.cols;
    Batch batch;
    batch.input_ids = Tensor::zeros_host({B, T}, DType::i64);
    batch.labels = Tensor::zeros_host({B, T}, DType::i64);
    batch.loss_mask = Tensor::zeros_host({B, T}, DType::f32);
    const std::int64_t base = s.position % d.rows;
    for (std::int64_t b = 0; b < B; ++b) {
      const std::int64_t row = (base + ctx_.dp_rank * B + b) % d.rows;
      for (std::int64_t t = 0; t < T; ++t) {
        batch.input_ids.ptr<std::int64_t>()[b * T + t] = d.input_ids.ptr<std::int64_t>()[row * T + t];
        batch.labels.ptr<std::int64_t>()[b * T + t] = d.labels.ptr<std::int64_t>()[row * T + t];
        batch.loss_mask.ptr<float>()[b * T + t] = d.loss_mask.ptr<float>()[row * T + t];
      }
    }
    s.position += B * ctx_.dp_size;
    return batch;
  }

  std::int64_t position(Split split) const override { return at(split).position; }
  void seek(Split split, std::int64_t position) override {
    if (position < 0)
      throw Error("fixed data: cannot seek the " + std::string(split_name(split)) + " split to a negative position " +
                  std::to_string(position));
    at(split).position = position;
  }

 private:
  struct State {
    std::shared_ptr<const FixedData> data;
    std::int64_t position = 0;
  };
  State& at(Split s) { return splits_[index_of(s)]; }
  const State& at(Split s) const { return splits_[index_of(s)]; }
  static std::size_t index_of(Split s) {
    const auto i = static_cast<std::size_t>(s);
    if (i > 2) throw Error("fixed data: unknown split " + std::to_string(i));
    return i;
  }
  DataContext ctx_;
  std::array<State, 3> splits_;
};

DataSource* make_fixed_data(const Options& options, const DataContext& context) {
  try {
    return new FixedDataSource(options, context);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(std::string("fixed data: ") + e.what());
  }
}

}  // namespace
}  // namespace neox

NEOX_PLUGIN(data, "fixed", "1.0", "batches from a safetensors file (input_ids, labels, loss_mask), in order",
            &neox::make_fixed_data)
