// SPDX-License-Identifier: Apache-2.0
// The `fixed` data plugin: rows of a safetensors file served in order.
#include <gtest/gtest.h>

#include <unistd.h>
#include "test_support.h"

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "neox/data_source.h"
#include "neox/error.h"
#include "neox/io/safetensors.h"
#include "neox/options.h"
#include "neox/registry.h"

namespace {

namespace fs = std::filesystem;
using neox::DataContext;
using neox::DType;
using neox::Split;
using neox::Tensor;

using neox::test::error_of;

constexpr std::int64_t kRows = 5;
constexpr std::int64_t kCols = 4;

class DataFixed : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("neox_fixed_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // input_ids[r, t] = 10 * r + t + base, labels = input + 1, loss_mask[r, t] = r + t / 10.
  std::string write(const std::string& name, std::int64_t base = 0, bool with_mask = true, std::int64_t cols = kCols,
                    DType id_dtype = DType::i64) {
    Tensor ids = Tensor::zeros_host({kRows, cols}, DType::i64);
    Tensor labels = Tensor::zeros_host({kRows, cols}, DType::i64);
    Tensor mask = Tensor::zeros_host({kRows, cols}, DType::f32);
    for (std::int64_t r = 0; r < kRows; ++r)
      for (std::int64_t t = 0; t < cols; ++t) {
        ids.ptr<std::int64_t>()[r * cols + t] = 10 * r + t + base;
        labels.ptr<std::int64_t>()[r * cols + t] = 10 * r + t + base + 1;
        mask.ptr<float>()[r * cols + t] = static_cast<float>(r) + static_cast<float>(t) / 10.0f;
      }
    if (id_dtype == DType::i32) {
      Tensor narrow = Tensor::zeros_host({kRows, cols}, DType::i32);
      neox::convert_host(narrow.data(), DType::i32, ids.data(), DType::i64, ids.numel());
      ids = narrow;
    }
    std::vector<std::pair<std::string, Tensor>> ts = {{"input_ids", ids}, {"labels", labels}};
    if (with_mask) ts.emplace_back("loss_mask", mask);
    const std::string path = (dir_ / name).string();
    neox::write_safetensors(path, ts);
    return path;
  }
  static DataContext context(std::int64_t micro_batch = 2, int dp_rank = 0, int dp_size = 1) {
    DataContext c;
    c.seq_length = kCols;
    c.micro_batch_size = micro_batch;
    c.vocab_size = 100;
    c.dp_rank = dp_rank;
    c.dp_size = dp_size;
    return c;
  }
  static neox::Options options(const std::string& path) {
    neox::Options o("plugins.options.fixed");
    o.set("path", path);
    return o;
  }
  std::shared_ptr<neox::DataSource> make(const neox::Options& o, const DataContext& c) {
    return registry_.make_data("fixed", o, c);
  }
  // The file row that batch row b holds (checks the whole row).
  static std::int64_t which_row(const neox::Batch& batch, std::int64_t b, std::int64_t base = 0) {
    const std::int64_t T = batch.input_ids.dim(1);
    const std::int64_t r = (batch.input_ids.ptr<std::int64_t>()[b * T] - base) / 10;
    for (std::int64_t t = 0; t < T; ++t) {
      EXPECT_EQ(batch.input_ids.ptr<std::int64_t>()[b * T + t], 10 * r + t + base);
      EXPECT_EQ(batch.labels.ptr<std::int64_t>()[b * T + t], 10 * r + t + base + 1);
    }
    return r;
  }

  fs::path dir_;
  neox::PluginRegistry registry_{{neox::test::build_plugin_dir()}};
};

TEST_F(DataFixed, ServesRowsInOrderAndWraps) {
  auto src = make(options(write("a.safetensors")), context(2));
  EXPECT_EQ(src->name(), "fixed");
  EXPECT_EQ(src->num_samples(Split::train), kRows);
  const std::vector<std::int64_t> want = {0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1};
  for (std::size_t step = 0; step < 6; ++step) {
    const auto batch = src->next(Split::train);
    ASSERT_EQ(batch.input_ids.shape(), (neox::Shape{2, kCols}));
    EXPECT_EQ(batch.input_ids.dtype(), DType::i64);
    EXPECT_EQ(batch.labels.shape(), (neox::Shape{2, kCols}));
    EXPECT_EQ(batch.labels.dtype(), DType::i64);
    EXPECT_EQ(batch.loss_mask.shape(), (neox::Shape{2, kCols}));
    EXPECT_EQ(batch.loss_mask.dtype(), DType::f32);
    for (std::int64_t b = 0; b < 2; ++b) {
      const std::int64_t r = which_row(batch, b);
      EXPECT_EQ(r, want[2 * step + static_cast<std::size_t>(b)]);
      for (std::int64_t t = 0; t < kCols; ++t)
        EXPECT_EQ(batch.loss_mask.ptr<float>()[b * kCols + t], static_cast<float>(r) + static_cast<float>(t) / 10.0f);
    }
    EXPECT_EQ(src->position(Split::train), 2 * static_cast<std::int64_t>(step + 1));
  }
  // Every split serves the same file, each from its own position.
  EXPECT_EQ(which_row(src->next(Split::valid), 0), 0);
  EXPECT_EQ(which_row(src->next(Split::test), 1), 1);
}

TEST_F(DataFixed, DefaultMaskIsOnesAndI32IdsAreAccepted) {
  auto src = make(options(write("nomask.safetensors", 0, false, kCols, DType::i32)), context(3));
  const auto batch = src->next(Split::train);
  for (std::int64_t i = 0; i < batch.loss_mask.numel(); ++i) EXPECT_EQ(batch.loss_mask.ptr<float>()[i], 1.0f);
  EXPECT_EQ(which_row(batch, 2), 2);
}

TEST_F(DataFixed, SeekAndDataParallelShards) {
  const std::string path = write("a.safetensors");
  auto whole = make(options(path), context(2, 0, 1));
  auto rank0 = make(options(path), context(1, 0, 2));
  auto rank1 = make(options(path), context(1, 1, 2));
  for (int step = 0; step < 7; ++step) {
    const auto g = whole->next(Split::train);
    EXPECT_EQ(which_row(rank0->next(Split::train), 0), which_row(g, 0));
    EXPECT_EQ(which_row(rank1->next(Split::train), 0), which_row(g, 1));
    EXPECT_EQ(rank1->position(Split::train), whole->position(Split::train));
  }
  auto resumed = make(options(path), context(2));
  resumed->seek(Split::train, 3);
  EXPECT_EQ(resumed->position(Split::train), 3);
  const auto b = resumed->next(Split::train);
  EXPECT_EQ(which_row(b, 0), 3);
  EXPECT_EQ(which_row(b, 1), 4);
  EXPECT_THROW(resumed->seek(Split::valid, -2), neox::Error);
}

TEST_F(DataFixed, ValidAndTestPaths) {
  neox::Options o = options(write("train.safetensors"));
  o.set("valid_path", write("valid.safetensors", 50));
  auto src = make(o, context(1));
  EXPECT_EQ(which_row(src->next(Split::train), 0), 0);
  EXPECT_EQ(which_row(src->next(Split::valid), 0, 50), 0);
  EXPECT_EQ(src->next(Split::valid).input_ids.ptr<std::int64_t>()[0], 60);
  EXPECT_EQ(src->next(Split::test).input_ids.ptr<std::int64_t>()[0], 0);
}

TEST_F(DataFixed, Errors) {
  auto expect_error = [&](const neox::Options& o, const DataContext& c, std::vector<std::string> phrases) {
    const std::string msg = error_of([&] { make(o, c); });
    for (const auto& p : phrases) EXPECT_NE(msg.find(p), std::string::npos) << p << " in: " << msg;
  };
  const std::string good = write("good.safetensors");
  // seq_length differs from the rows' length.
  {
    auto c = context();
    c.seq_length = 8;
    expect_error(options(good), c, {good, "rows of 4 tokens", "seq_length is 8"});
  }
  // ids at or above the vocabulary.
  {
    auto c = context();
    c.vocab_size = 30;
    expect_error(options(good), c, {good, "input_ids[", "vocabulary size 30"});
  }
  // missing tensors, missing file, missing or unknown options.
  {
    const std::string path = (dir_ / "nolabels.safetensors").string();
    neox::write_safetensors(path, {{"input_ids", Tensor::zeros_host({2, kCols}, DType::i64)}});
    expect_error(options(path), context(), {path, "no tensor 'labels'"});
  }
  {
    const std::string path = (dir_ / "floats.safetensors").string();
    neox::write_safetensors(path, {{"input_ids", Tensor::zeros_host({2, kCols}, DType::f32)},
                                   {"labels", Tensor::zeros_host({2, kCols}, DType::i64)}});
    expect_error(options(path), context(), {path, "2-D integer tensor"});
  }
  {
    const std::string path = (dir_ / "badmask.safetensors").string();
    neox::write_safetensors(path, {{"input_ids", Tensor::zeros_host({2, kCols}, DType::i64)},
                                   {"labels", Tensor::zeros_host({2, kCols}, DType::i64)},
                                   {"loss_mask", Tensor::zeros_host({2, kCols + 1}, DType::f32)}});
    expect_error(options(path), context(), {path, "loss_mask"});
  }
  expect_error(options((dir_ / "absent.safetensors").string()), context(), {"absent.safetensors"});
  expect_error(neox::Options("plugins.options.fixed"), context(), {"path", "required"});
  {
    auto o = options(good);
    o.set("shuffle", true);
    expect_error(o, context(), {"shuffle"});
  }
  {
    auto o = options(good);
    o.set("test_path", (dir_ / "nope.safetensors").string());
    expect_error(o, context(), {"nope.safetensors"});
  }
}

}  // namespace
