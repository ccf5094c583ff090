// SPDX-License-Identifier: Apache-2.0
// Megatron / GPT-NeoX indexed datasets: reading GPT-NeoX's own files,
// writing byte-identical ones, and refusing corrupt ones with messages that
// name the file and the problem.
#include <gtest/gtest.h>

#include <unistd.h>
#include "test_support.h"

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "neox/error.h"
#include "neox/io/indexed_dataset.h"

namespace {

namespace fs = std::filesystem;
using neox::DType;
using neox::IndexedDataset;
using neox::IndexedDatasetWriter;

const std::string kMegatron = neox::test::testdata_dir() + "/megatron";

using neox::test::error_of;

std::vector<unsigned char> slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void spit(const std::string& path, const std::vector<unsigned char>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

const nlohmann::json& expected() {
  static const nlohmann::json j = [] {
    std::ifstream in(kMegatron + "/expected.json");
    return nlohmann::json::parse(in);
  }();
  return j;
}

template <typename T>
void put(std::vector<unsigned char>& out, T v) {
  unsigned char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.insert(out.end(), b, b + sizeof(T));
}

class IndexedDatasetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("neox_indexed_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // A hand-made uint16 dataset, written byte by byte as the format says:
  // 3 items of 2, 0 and 3 tokens in 2 documents ([item 0, item 1], [item 2]).
  static std::vector<unsigned char> tiny_idx() {
    std::vector<unsigned char> b = {'M', 'M', 'I', 'D', 'I', 'D', 'X', 0, 0};
    put<std::uint64_t>(b, 1);  // version
    put<std::uint8_t>(b, 8);   // dtype code: uint16
    put<std::uint64_t>(b, 3);  // items
    put<std::uint64_t>(b, 3);  // document index entries
    for (std::int32_t s : {2, 0, 3}) put(b, s);
    for (std::int64_t p : {0, 4, 4}) put(b, p);  // byte offsets
    for (std::int64_t d : {0, 2, 3}) put(b, d);
    return b;
  }
  static std::vector<unsigned char> tiny_bin() {
    std::vector<unsigned char> b;
    for (std::uint16_t t : {5, 6, 65535, 8, 9}) put(b, t);
    return b;
  }
  std::string write_tiny(const std::vector<unsigned char>& idx, const std::vector<unsigned char>& bin,
                         const std::string& name = "tiny") {
    spit(path(name + ".idx"), idx);
    spit(path(name + ".bin"), bin);
    return path(name);
  }

  fs::path dir_;
};

TEST_F(IndexedDatasetTest, ReadsGptNeoxCorpora) {
  for (const std::string name : {"corpus_a", "corpus_b"}) {
    SCOPED_TRACE(name);
    const auto& c = expected()["datasets"][name];
    const auto ds = IndexedDataset::open(kMegatron + "/" + name);
    EXPECT_EQ(ds.dtype(), c["dtype"] == "uint16" ? DType::u16 : DType::i32);
    EXPECT_EQ(ds.num_items(), c["num_documents"].get<std::int64_t>());
    EXPECT_EQ(ds.num_documents(), c["num_documents"].get<std::int64_t>());
    EXPECT_EQ(ds.dtype(), neox::best_token_dtype(c["vocab_size"].get<std::int64_t>()));

    // sizes and doc_idx against the .idx bytes parsed here independently.
    const auto idx = slurp(kMegatron + "/" + name + ".idx");
    std::uint64_t n = 0, d = 0;
    std::memcpy(&n, idx.data() + 18, 8);
    std::memcpy(&d, idx.data() + 26, 8);
    ASSERT_EQ(static_cast<std::uint64_t>(ds.num_items()), n);
    std::int64_t total = 0;
    for (std::uint64_t i = 0; i < n; ++i) {
      std::int32_t s;
      std::memcpy(&s, idx.data() + 34 + 4 * i, 4);
      EXPECT_EQ(ds.sizes()[i], s);
      total += s;
    }
    for (std::uint64_t i = 0; i < d; ++i) {
      std::int64_t v;
      std::memcpy(&v, idx.data() + 34 + 12 * n + 8 * i, 8);
      EXPECT_EQ(ds.doc_idx()[i], v);
    }
    EXPECT_EQ(ds.num_tokens(), total);
    EXPECT_EQ(static_cast<std::uint64_t>(total) * neox::dtype_size(ds.dtype()),
              fs::file_size(kMegatron + "/" + name + ".bin"));
    EXPECT_EQ(ds.max_token(), name == "corpus_a" ? 999 : 69936);
    EXPECT_LT(ds.max_token(), c["vocab_size"].get<std::int64_t>());

    // Tokens: every sample GPT-NeoX produced, reassembled from the reference
    // doc_idx / sample_idx / shuffle_idx with read().
    for (const auto& [split, x] : c["splits"].items()) {
      const auto& doc_idx = x["doc_idx"];
      const auto& sample_idx = x["sample_idx"];
      const auto& shuffle_idx = x["shuffle_idx"];
      for (std::size_t k = 0; k < x["samples"].size(); ++k) {
        const std::int64_t s = shuffle_idx[k];
        const std::int64_t f = sample_idx[s][0], fo = sample_idx[s][1];
        const std::int64_t l = sample_idx[s + 1][0], lo = sample_idx[s + 1][1];
        std::vector<std::int32_t> tokens;
        auto take = [&](std::int64_t pos, std::int64_t offset, std::int64_t count) {
          const std::int64_t item = doc_idx[static_cast<std::size_t>(pos)];
          if (count < 0) count = ds.sizes()[static_cast<std::size_t>(item)] - offset;
          std::vector<std::int32_t> part(static_cast<std::size_t>(count));
          ds.read(item, offset, count, part.data());
          tokens.insert(tokens.end(), part.begin(), part.end());
        };
        if (f == l) {
          take(f, fo, lo - fo + 1);
        } else {
          take(f, fo, -1);
          for (std::int64_t p = f + 1; p < l; ++p) take(p, 0, -1);
          take(l, 0, lo + 1);
        }
        ASSERT_EQ(tokens, x["samples"][k].get<std::vector<std::int32_t>>()) << split << " sample " << k;
      }
    }
  }
}

TEST_F(IndexedDatasetTest, RewriteIsByteIdentical) {
  for (const std::string name : {"corpus_a", "corpus_b"}) {
    SCOPED_TRACE(name);
    const auto ds = IndexedDataset::open(kMegatron + "/" + name);
    {
      IndexedDatasetWriter w(path(name), ds.dtype());
      std::vector<std::int32_t> buf;
      for (std::int64_t i = 0; i < ds.num_items(); ++i) {
        buf.resize(static_cast<std::size_t>(ds.sizes()[static_cast<std::size_t>(i)]));
        ds.read(i, 0, static_cast<std::int64_t>(buf.size()), buf.data());
        w.add_item(buf.data(), static_cast<std::int64_t>(buf.size()));
        w.end_document();  // one item per document, as preprocess_data.py
      }
      w.finish();
    }
    EXPECT_EQ(slurp(path(name) + ".idx"), slurp(kMegatron + "/" + name + ".idx"));
    EXPECT_EQ(slurp(path(name) + ".bin"), slurp(kMegatron + "/" + name + ".bin"));
  }
}

TEST_F(IndexedDatasetTest, WriterRoundTrip) {
  std::mt19937 gen(7);
  for (DType dtype : {DType::u16, DType::i32}) {
    SCOPED_TRACE(std::string(neox::dtype_name(dtype)));
    const std::string prefix = path(std::string("rt_") + std::string(neox::dtype_name(dtype)));
    std::vector<std::vector<std::int32_t>> items;
    std::vector<std::int64_t> doc_idx = {0};
    {
      IndexedDatasetWriter w(prefix, dtype);
      for (int doc = 0; doc < 20; ++doc) {
        const int n_items = static_cast<int>(gen() % 4);  // documents of 0..3 items
        for (int k = 0; k < n_items; ++k) {
          std::vector<std::int32_t> item(gen() % 50);  // items of 0..49 tokens
          for (auto& t : item) t = static_cast<std::int32_t>(gen() % (dtype == DType::u16 ? 65536u : 2000000000u));
          w.add_item(item.data(), static_cast<std::int64_t>(item.size()));
          items.push_back(item);
        }
        w.end_document();
        doc_idx.push_back(static_cast<std::int64_t>(items.size()));
      }
      EXPECT_FALSE(fs::exists(prefix + ".idx"));  // nothing in place before finish()
      w.finish();
    }
    const auto ds = IndexedDataset::open(prefix);
    EXPECT_EQ(ds.dtype(), dtype);
    ASSERT_EQ(ds.num_items(), static_cast<std::int64_t>(items.size()));
    EXPECT_EQ(ds.doc_idx(), doc_idx);
    EXPECT_EQ(ds.num_documents(), 20);
    std::int32_t max_token = 0;
    for (std::size_t i = 0; i < items.size(); ++i) {
      ASSERT_EQ(ds.sizes()[i], static_cast<std::int32_t>(items[i].size()));
      std::vector<std::int32_t> got(items[i].size());
      ds.read(static_cast<std::int64_t>(i), 0, static_cast<std::int64_t>(got.size()), got.data());
      EXPECT_EQ(got, items[i]);
      for (auto t : items[i]) max_token = std::max(max_token, t);
      if (items[i].size() >= 3) {  // a window in the middle
        std::int32_t two[2];
        ds.read(static_cast<std::int64_t>(i), 1, 2, two);
        EXPECT_EQ(two[0], items[i][1]);
        EXPECT_EQ(two[1], items[i][2]);
      }
    }
    EXPECT_EQ(ds.max_token(), max_token);
  }
}

TEST_F(IndexedDatasetTest, WriterClosesTheLastDocumentAndCleansUp) {
  const std::int32_t t[3] = {1, 2, 3};
  {
    IndexedDatasetWriter w(path("open_doc"), DType::u16);
    w.add_item(t, 3);
    w.add_item(t, 2);
    w.finish();  // no end_document(): the items form one document
    EXPECT_THROW(w.add_item(t, 1), neox::Error);
  }
  const auto ds = IndexedDataset::open(path("open_doc"));
  EXPECT_EQ(ds.doc_idx(), (std::vector<std::int64_t>{0, 2}));
  {
    IndexedDatasetWriter w(path("abandoned"), DType::i32);
    w.add_item(t, 3);
  }  // destroyed without finish(): no files, no temporaries left
  for (const auto& e : fs::directory_iterator(dir_))
    EXPECT_EQ(e.path().filename().string().rfind("abandoned", 0), std::string::npos) << e.path();
}

TEST_F(IndexedDatasetTest, WriterRefusesTokensThatDoNotFit) {
  IndexedDatasetWriter w(path("fit"), DType::u16);
  const std::int32_t big[2] = {1, 70000};
  const std::string msg = error_of([&] { w.add_item(big, 2); });
  EXPECT_NE(msg.find("70000"), std::string::npos) << msg;
  EXPECT_NE(msg.find("uint16"), std::string::npos) << msg;
  const std::int32_t neg[1] = {-1};
  EXPECT_THROW(w.add_item(neg, 1), neox::Error);
  EXPECT_THROW(IndexedDatasetWriter(path("f32"), DType::f32), neox::Error);
}

TEST_F(IndexedDatasetTest, ReadsAHandBuiltDataset) {
  const std::string prefix = write_tiny(tiny_idx(), tiny_bin());
  const auto ds = IndexedDataset::open(prefix);
  EXPECT_EQ(ds.prefix(), prefix);
  EXPECT_EQ(ds.dtype(), DType::u16);
  EXPECT_EQ(ds.num_items(), 3);
  EXPECT_EQ(ds.num_documents(), 2);
  EXPECT_EQ(ds.num_tokens(), 5);
  EXPECT_EQ(ds.sizes(), (std::vector<std::int32_t>{2, 0, 3}));
  EXPECT_EQ(ds.doc_idx(), (std::vector<std::int64_t>{0, 2, 3}));
  std::int32_t out[3] = {0, 0, 0};
  ds.read(0, 0, 2, out);
  EXPECT_EQ(out[0], 5);
  EXPECT_EQ(out[1], 6);
  ds.read(2, 0, 3, out);
  EXPECT_EQ(out[0], 65535);  // uint16 ids above 32767 stay positive
  EXPECT_EQ(out[1], 8);
  EXPECT_EQ(out[2], 9);
  ds.read(1, 0, 0, out);  // an empty item
  EXPECT_EQ(ds.max_token(), 65535);
  EXPECT_THROW(ds.read(3, 0, 1, out), neox::Error);
  EXPECT_THROW(ds.read(0, 1, 2, out), neox::Error);
  EXPECT_THROW(ds.read(0, -1, 1, out), neox::Error);
}

// Each corruption has its own message, naming the file that is wrong.
TEST_F(IndexedDatasetTest, CorruptionsGiveTheirOwnErrors) {
  struct Case {
    const char* name;
    std::vector<unsigned char> idx, bin;
    const char* file;     // the file the message must name
    const char* problem;  // and a phrase of the problem
  };
  std::vector<Case> cases;
  auto idx = tiny_idx();
  auto bin = tiny_bin();

  cases.push_back({"truncated_bin", idx, {bin.begin(), bin.end() - 2}, ".bin", "past the end"});
  {
    auto b = idx;
    b[0] = 'X';
    cases.push_back({"magic", b, bin, ".idx", "wrong magic"});
  }
  {
    auto b = idx;
    b[9] = 2;
    cases.push_back({"version", b, bin, ".idx", "version 2 is not supported"});
  }
  {
    auto b = idx;
    b[17] = 3;
    cases.push_back({"dtype", b, bin, ".idx",
                     "dtype code 3 (int16) is not supported; supported codes are 4 (int32) and 8 (uint16)"});
  }
  cases.push_back({"truncated_idx", {idx.begin(), idx.end() - 8}, bin, ".idx", "truncated"});
  cases.push_back({"short_header", {idx.begin(), idx.begin() + 20}, bin, ".idx", "34-byte header"});
  {
    auto b = idx;
    const std::int64_t far = 100;
    std::memcpy(b.data() + 34 + 12 + 16, &far, 8);  // pointer of item 2
    cases.push_back({"pointer", b, bin, ".bin", "past the end"});
  }
  {
    auto b = idx;
    const std::uint64_t n = 1000;  // item count that the file cannot hold
    std::memcpy(b.data() + 18, &n, 8);
    cases.push_back({"count", b, bin, ".idx", "1000 items"});
  }
  {
    auto b = idx;
    const std::int64_t v = 2;  // doc_idx {0, 2, 3} -> {0, 2, 2}
    std::memcpy(b.data() + 34 + 36 + 16, &v, 8);
    cases.push_back({"doc_idx_end", b, bin, ".idx", "must end at the item count 3"});
  }
  {
    auto b = idx;
    const std::int64_t v = 3;  // doc_idx {0, 2, 3} -> {0, 3, 2}
    std::memcpy(b.data() + 34 + 36 + 8, &v, 8);
    const std::int64_t w = 2;
    std::memcpy(b.data() + 34 + 36 + 16, &w, 8);
    cases.push_back({"doc_idx_order", b, bin, ".idx", "not non-decreasing"});
  }
  {
    auto b = idx;
    const std::int32_t neg = -2;
    std::memcpy(b.data() + 34 + 4, &neg, 4);
    cases.push_back({"negative_size", b, bin, ".idx", "negative size"});
  }

  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string prefix = write_tiny(c.idx, c.bin, c.name);
    const std::string msg = error_of([&] { IndexedDataset::open(prefix); });
    EXPECT_NE(msg.find(prefix + c.file), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.problem), std::string::npos) << msg;
  }
}

TEST_F(IndexedDatasetTest, MissingFilesAreNamed) {
  std::string msg = error_of([&] { IndexedDataset::open(path("nothing")); });
  EXPECT_NE(msg.find(path("nothing") + ".idx: cannot open"), std::string::npos) << msg;
  spit(path("half.idx"), tiny_idx());
  msg = error_of([&] { IndexedDataset::open(path("half")); });
  EXPECT_NE(msg.find(path("half") + ".bin: cannot open"), std::string::npos) << msg;
}

// An item written in parts equals the item written at once; a dropped item
// leaves nothing in .bin.
TEST(IndexedDatasetWriter, ItemInParts) {
  const auto dir = neox::test::temp_dir("indexed_dataset", "parts");
  const std::vector<std::int32_t> a = {1, 2, 3}, b = {4, 5}, c = {6};
  {
    neox::IndexedDatasetWriter w(dir + "/one", neox::DType::u16);
    w.add_item(a.data(), 3);
    w.end_document();
    std::vector<std::int32_t> bc = b;
    bc.insert(bc.end(), c.begin(), c.end());
    w.add_item(bc.data(), 3);
    w.end_document();
    w.finish();
  }
  {
    neox::IndexedDatasetWriter w(dir + "/parts", neox::DType::u16);
    w.add_to_item(a.data(), 3);
    w.end_item();
    w.end_document();
    w.add_to_item(c.data(), 1);
    w.add_to_item(a.data(), 3);
    w.discard_item();
    w.add_to_item(b.data(), 2);
    w.add_to_item(c.data(), 1);
    w.end_document();  // closes the item
    EXPECT_NE(neox::test::error_of([&] { w.add_to_item(nullptr, -1); }).find("[0, 2^31)"), std::string::npos);
    w.finish();
  }
  EXPECT_EQ(neox::test::read_text(dir + "/parts.bin"), neox::test::read_text(dir + "/one.bin"));
  EXPECT_EQ(neox::test::read_text(dir + "/parts.idx"), neox::test::read_text(dir + "/one.idx"));
}

}  // namespace
