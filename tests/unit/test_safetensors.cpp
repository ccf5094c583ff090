// SPDX-License-Identifier: Apache-2.0
// Tests for the safetensors reader, writer and host dtype conversion.
#include <gtest/gtest.h>

#include <stdlib.h>
#include <unistd.h>
#include "test_support.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "neox/error.h"
#include "neox/io/safetensors.h"
#include "neox/tensor.h"

namespace fs = std::filesystem;
using neox::DType;
using neox::SafeTensorsFile;
using neox::Shape;
using neox::Tensor;

namespace {

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

std::string le64(std::uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[static_cast<std::size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}

std::uint64_t get_le64(const std::string& s) {
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = n << 8 | static_cast<unsigned char>(s[static_cast<std::size_t>(i)]);
  return n;
}

// 8-byte length (the header's own unless given), header, data.
std::string raw_file(const std::string& header, const std::string& data = "") {
  return le64(header.size()) + header + data;
}

// A host tensor holding exactly `bytes`.
Tensor host_tensor(Shape shape, DType dtype, const void* bytes) {
  Tensor t = Tensor::empty(nullptr, std::move(shape), dtype);
  if (t.bytes()) std::memcpy(t.data(), bytes, t.bytes());
  return t;
}

template <typename T>
Tensor host_of(Shape shape, DType dtype, const std::vector<T>& v) {
  EXPECT_EQ(static_cast<std::size_t>(neox::numel(shape)) * sizeof(T), v.size() * sizeof(T));
  return host_tensor(std::move(shape), dtype, v.data());
}

template <typename T>
std::vector<T> values(const Tensor& t) {
  std::vector<T> v(static_cast<std::size_t>(t.numel()));
  if (t.bytes()) std::memcpy(v.data(), t.data(), t.bytes());
  return v;
}

template <typename T>
T bits_of(auto x) {
  static_assert(sizeof(T) == sizeof(x));
  T b;
  std::memcpy(&b, &x, sizeof(T));
  return b;
}

::testing::AssertionResult OpenFails(const std::string& path, const std::string& phrase) {
  try {
    SafeTensorsFile f = SafeTensorsFile::open(path);
    return ::testing::AssertionFailure() << "opened " << path << " (" << f.tensors().size() << " tensors)";
  } catch (const neox::Error& e) {
    std::string m = e.what();
    if (m.find(path) == std::string::npos)
      return ::testing::AssertionFailure() << "message does not name the file: " << m;
    if (m.find(phrase) == std::string::npos)
      return ::testing::AssertionFailure() << "message lacks '" << phrase << "': " << m;
    return ::testing::AssertionSuccess();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "non-neox exception: " << e.what();
  }
}

template <typename F>
::testing::AssertionResult ThrowsWith(F&& f, const std::string& phrase) {
  try {
    f();
    return ::testing::AssertionFailure() << "did not throw";
  } catch (const neox::Error& e) {
    std::string m = e.what();
    if (m.find(phrase) == std::string::npos)
      return ::testing::AssertionFailure() << "message lacks '" << phrase << "': " << m;
    return ::testing::AssertionSuccess();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "non-neox exception: " << e.what();
  }
}

class SafeTensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::path(::testing::TempDir()) / "neox_safetensors_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr) << tmpl;
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string file(const std::string& name) const { return (fs::path(dir_) / name).string(); }
  std::vector<std::string> dir_entries() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir_)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }
  // Writes raw bytes and expects open to fail with `phrase`.
  ::testing::AssertionResult Malformed(const std::string& bytes, const std::string& phrase) {
    std::string path = file("bad.safetensors");
    write_bytes(path, bytes);
    return OpenFails(path, phrase);
  }
  ::testing::AssertionResult MalformedHeader(const std::string& header, const std::string& data,
                                             const std::string& phrase) {
    return Malformed(raw_file(header, data), phrase);
  }
  std::string dir_;
};

class SafeTensorsRoundTrip : public SafeTensorsTest {};
class SafeTensorsRead : public SafeTensorsTest {};
class SafeTensorsMalformed : public SafeTensorsTest {};
class SafeTensorsWriter : public SafeTensorsTest {};
class SafeTensorsFuzz : public SafeTensorsTest {};
class SafeTensorsHF : public SafeTensorsTest {};

const std::string kEntryA = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";

// --- round trips ----------------------------------------------------------------

TEST_F(SafeTensorsRoundTrip, EveryDtypeBitExactWithMetadata) {
  const double dnan = bits_of<double>(std::uint64_t{0x7ff8000000000123ull});
  std::vector<double> f64 = {1.5,
                             -0.0,
                             dnan,
                             -std::numeric_limits<double>::infinity(),
                             std::numeric_limits<double>::denorm_min(),
                             std::numeric_limits<double>::max()};
  std::vector<std::uint32_t> f32 = {0x3f800000u, 0x80000000u, 0x7fc01234u, 0x00000001u};
  std::vector<std::uint16_t> f16 = {0x7bff, 0x0001, 0x8000, 0x7c00, 0x7e01};
  std::vector<std::uint16_t> bf16 = {0x7f7f, 0x0001, 0x8000, 0xff80, 0x7fc1};
  std::vector<std::int64_t> i64 = {std::numeric_limits<std::int64_t>::min(), -1,
                                   std::numeric_limits<std::int64_t>::max()};
  std::vector<std::int32_t> i32 = {std::numeric_limits<std::int32_t>::min(), 0,
                                   std::numeric_limits<std::int32_t>::max()};
  std::vector<std::uint16_t> u16 = {0, 1, 65535, 12345};
  std::vector<float> scalar = {3.25f};

  std::vector<std::pair<std::string, Tensor>> ts = {
      {"f64", host_of({2, 3}, DType::f64, f64)},
      {"f32", host_of({2, 2}, DType::f32, f32)},
      {"f16", host_of({5}, DType::f16, f16)},
      {"bf16", host_of({5, 1}, DType::bf16, bf16)},
      {"i64", host_of({3}, DType::i64, i64)},
      {"i32", host_of({1, 3}, DType::i32, i32)},
      {"u16", host_of({2, 2}, DType::u16, u16)},
      {"scalar", host_of({}, DType::f32, scalar)},
      {"empty", Tensor::empty(nullptr, {0}, DType::f32)},
      {"empty3d", Tensor::empty(nullptr, {2, 0, 3}, DType::i64)},
      {"name with \"quotes\", \\ and \xc3\xa9", host_of({1}, DType::u16, std::vector<std::uint16_t>{7})},
  };
  std::map<std::string, std::string> meta = {
      {"format", "pt"}, {"note", "a \"quoted\" value\nwith a newline and \xc3\xbc"}, {"", "empty key"}};
  std::string path = file("all.safetensors");
  neox::write_safetensors(path, ts, meta);

  std::string raw = read_bytes(path);
  std::uint64_t n = get_le64(raw);
  EXPECT_EQ(n % 8, 0u) << "header is padded to a multiple of 8";
  EXPECT_EQ(raw.substr(8, 16), "{\"__metadata__\":");

  SafeTensorsFile f = SafeTensorsFile::open(path);
  EXPECT_EQ(f.path(), path);
  EXPECT_EQ(f.metadata(), meta);
  ASSERT_EQ(f.tensors().size(), ts.size());
  std::uint64_t offset = 0;
  for (std::size_t i = 0; i < ts.size(); ++i) {
    const auto& [name, t] = ts[i];
    SCOPED_TRACE(name);
    const neox::SafeTensorInfo& info = f.tensors()[i];
    EXPECT_EQ(info.name, name);  // written order is offset order
    EXPECT_EQ(info.dtype, t.dtype());
    EXPECT_EQ(info.shape, t.shape());
    EXPECT_EQ(info.begin, offset);
    EXPECT_EQ(info.end - info.begin, t.bytes());
    offset = info.end;
    EXPECT_TRUE(f.contains(name));
    EXPECT_EQ(&f.info(name), &info);
    Tensor v = f.view(name);
    EXPECT_EQ(v.dtype(), t.dtype());
    EXPECT_EQ(v.shape(), t.shape());
    EXPECT_TRUE(v.device().is_cpu());
    EXPECT_EQ(std::memcmp(v.data(), t.data(), t.bytes()), 0);
    EXPECT_EQ(0, std::memcmp(v.data(), raw.data() + 8 + n + info.begin, t.bytes()));
    Tensor r = f.read(name, t.dtype());
    EXPECT_EQ(r.shape(), t.shape());
    EXPECT_EQ(std::memcmp(r.data(), t.data(), t.bytes()), 0);
  }
  EXPECT_EQ(raw.size(), 8 + n + offset);
  EXPECT_FALSE(f.contains("missing"));
}

TEST_F(SafeTensorsRoundTrip, NoTensorsAndNoMetadata) {
  std::string path = file("empty.safetensors");
  neox::write_safetensors(path, {});
  std::string raw = read_bytes(path);
  EXPECT_EQ(raw.size() % 8, 0u);
  SafeTensorsFile f = SafeTensorsFile::open(path);
  EXPECT_TRUE(f.tensors().empty());
  EXPECT_TRUE(f.metadata().empty());
  EXPECT_EQ(raw.find("__metadata__"), std::string::npos);

  neox::write_safetensors(path, {}, {{"k", "v"}});
  SafeTensorsFile g = SafeTensorsFile::open(path);
  EXPECT_TRUE(g.tensors().empty());
  EXPECT_EQ(g.metadata().at("k"), "v");
}

TEST_F(SafeTensorsRoundTrip, OverwritesExistingFile) {
  std::string path = file("x.safetensors");
  neox::write_safetensors(path, {{"a", host_of({1}, DType::i32, std::vector<std::int32_t>{1})}});
  neox::write_safetensors(path, {{"b", host_of({2}, DType::i32, std::vector<std::int32_t>{2, 3})}});
  SafeTensorsFile f = SafeTensorsFile::open(path);
  EXPECT_FALSE(f.contains("a"));
  EXPECT_EQ(values<std::int32_t>(f.read("b", DType::i32)), (std::vector<std::int32_t>{2, 3}));
  EXPECT_EQ(dir_entries(), std::vector<std::string>{"x.safetensors"});
}

// --- conversion ------------------------------------------------------------------

template <typename D, typename S>
std::vector<D> convert(DType dt, DType st, const std::vector<S>& src) {
  std::vector<D> out(src.size());
  neox::convert_host(out.data(), dt, src.data(), st, static_cast<std::int64_t>(src.size()));
  return out;
}

TEST(SafeTensorsConvert, F64ToF32RoundsToNearestEven) {
  const double one = 1.0;
  std::vector<double> src = {
      one + std::ldexp(1.0, -24),                         // halfway -> even (1.0)
      one + 3 * std::ldexp(1.0, -24),                     // halfway -> even (1 + 2^-22)
      one + std::ldexp(1.0, -24) + std::ldexp(1.0, -50),  // just above halfway -> up
      1e300,
      -1e300,                                                                         // overflow -> +-inf
      static_cast<double>(std::numeric_limits<float>::max()) + std::ldexp(1.0, 102),  // rounds down to max
      0x1.ffffffp127,                                                                 // exactly halfway to 2^128 -> inf
      1e-300,                                                                         // underflow -> 0
      std::ldexp(1.0, -149),                                                          // smallest float subnormal
      -0.0,
      std::numeric_limits<double>::quiet_NaN(),
      std::numeric_limits<double>::infinity(),
      0.1};
  auto out = convert<float>(DType::f32, DType::f64, src);
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], 1.0f + std::ldexp(1.0f, -22));
  EXPECT_EQ(out[2], 1.0f + std::ldexp(1.0f, -23));
  EXPECT_EQ(out[3], std::numeric_limits<float>::infinity());
  EXPECT_EQ(out[4], -std::numeric_limits<float>::infinity());
  EXPECT_EQ(out[5], std::numeric_limits<float>::max());
  EXPECT_EQ(out[6], std::numeric_limits<float>::infinity());
  EXPECT_EQ(bits_of<std::uint32_t>(out[7]), 0u);
  EXPECT_EQ(bits_of<std::uint32_t>(out[8]), 1u);
  EXPECT_EQ(bits_of<std::uint32_t>(out[9]), 0x80000000u);
  EXPECT_TRUE(std::isnan(out[10]));
  EXPECT_EQ(out[11], std::numeric_limits<float>::infinity());
  EXPECT_EQ(out[12], 0.1f);
  // f32 -> f64 is exact.
  auto back = convert<double>(DType::f64, DType::f32, out);
  for (std::size_t i = 0; i < out.size(); ++i)
    if (!std::isnan(out[i])) {
      EXPECT_EQ(back[i], static_cast<double>(out[i])) << i;
    }
}

TEST(SafeTensorsConvert, Bf16AndF16EdgeValues) {
  // bf16 -> f32 is exact; f32 -> bf16 gives the same bits back.
  std::vector<std::uint16_t> bf = {0x0000, 0x8000, 0x0001, 0x7f7f, 0xff7f, 0x7f80, 0xff80, 0x3f80, 0xc2f7};
  auto f = convert<float>(DType::f32, DType::bf16, bf);
  EXPECT_EQ(f[0], 0.0f);
  EXPECT_TRUE(std::signbit(f[1]));
  EXPECT_EQ(f[2], std::ldexp(1.0f, -133));
  EXPECT_EQ(f[3], 0x1.fep127f);
  EXPECT_EQ(f[5], std::numeric_limits<float>::infinity());
  EXPECT_EQ(f[7], 1.0f);
  EXPECT_EQ(f[8], -123.5f);
  EXPECT_EQ(convert<std::uint16_t>(DType::bf16, DType::f32, f), bf);
  auto nan16 = convert<float>(DType::f32, DType::bf16, std::vector<std::uint16_t>{0x7fc1});
  EXPECT_TRUE(std::isnan(nan16[0]));
  EXPECT_TRUE(
      std::isnan(bits_of<float>(std::uint32_t{convert<std::uint16_t>(DType::bf16, DType::f32, nan16)[0]} << 16)));

  // f32 -> bf16 rounding: halfway to even, above halfway up, overflow to inf.
  std::vector<float> fs = {1.0f + std::ldexp(1.0f, -8), 1.0f + 3 * std::ldexp(1.0f, -8),
                           1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20), std::numeric_limits<float>::max()};
  EXPECT_EQ(convert<std::uint16_t>(DType::bf16, DType::f32, fs),
            (std::vector<std::uint16_t>{0x3f80, 0x3f82, 0x3f81, 0x7f80}));

  // f16 <-> f32.
  std::vector<std::uint16_t> h = {0x7bff, 0x0001, 0x0400, 0x8000, 0x7c00, 0xfc00, 0x3c00, 0x3555};
  auto hf = convert<float>(DType::f32, DType::f16, h);
  EXPECT_EQ(hf[0], 65504.0f);
  EXPECT_EQ(hf[1], std::ldexp(1.0f, -24));
  EXPECT_EQ(hf[2], std::ldexp(1.0f, -14));
  EXPECT_TRUE(std::signbit(hf[3]) && hf[3] == 0.0f);
  EXPECT_EQ(hf[4], std::numeric_limits<float>::infinity());
  EXPECT_EQ(hf[5], -std::numeric_limits<float>::infinity());
  EXPECT_EQ(hf[6], 1.0f);
  EXPECT_EQ(convert<std::uint16_t>(DType::f16, DType::f32, hf), h);
  EXPECT_EQ(convert<std::uint16_t>(
                DType::f16, DType::f32,
                std::vector<float>{65519.0f, 65520.0f, 1e-8f, std::ldexp(1.0f, -25), std::ldexp(1.5f, -25)}),
            (std::vector<std::uint16_t>{0x7bff, 0x7c00, 0x0000, 0x0000, 0x0001}));

  // bf16 <-> f16 through float: 65504 is not a bf16 (rounds to 65536), which
  // overflows f16.
  EXPECT_EQ(convert<std::uint16_t>(DType::bf16, DType::f16, std::vector<std::uint16_t>{0x7bff, 0x3c00}),
            (std::vector<std::uint16_t>{0x4780, 0x3f80}));
  EXPECT_EQ(convert<std::uint16_t>(DType::f16, DType::bf16, std::vector<std::uint16_t>{0x4780, 0x3f80, 0x0001}),
            (std::vector<std::uint16_t>{0x7c00, 0x3c00, 0x0000}));

  // f64 -> bf16 / f16 rounds once (no double rounding through float):
  // 1 + 2^-8 + 2^-40 is just above the bf16 halfway point, so it rounds up.
  std::vector<double> d = {1.0 + std::ldexp(1.0, -8) + std::ldexp(1.0, -40), 1.0 + std::ldexp(1.0, -8), 1e300, -1e-300,
                           1.0 / 3.0};
  EXPECT_EQ(convert<std::uint16_t>(DType::bf16, DType::f64, d),
            (std::vector<std::uint16_t>{0x3f81, 0x3f80, 0x7f80, 0x8000, 0x3eab}));
  std::vector<double> d16 = {1.0 + std::ldexp(1.0, -11) + std::ldexp(1.0, -40), 1.0 + std::ldexp(1.0, -11), 1e300,
                             65504.0, 1.0 / 3.0};
  EXPECT_EQ(convert<std::uint16_t>(DType::f16, DType::f64, d16),
            (std::vector<std::uint16_t>{0x3c01, 0x3c00, 0x7c00, 0x7bff, 0x3555}));
  auto back = convert<double>(DType::f64, DType::bf16, std::vector<std::uint16_t>{0x3f81, 0xc2f7});
  EXPECT_EQ(back, (std::vector<double>{1.0078125, -123.5}));
}

TEST(SafeTensorsConvert, IntegersWithRangeChecks) {
  std::vector<std::int64_t> ok = {0, -1, std::numeric_limits<std::int32_t>::min(),
                                  std::numeric_limits<std::int32_t>::max()};
  EXPECT_EQ(convert<std::int32_t>(DType::i32, DType::i64, ok),
            (std::vector<std::int32_t>{0, -1, std::numeric_limits<std::int32_t>::min(),
                                       std::numeric_limits<std::int32_t>::max()}));
  EXPECT_EQ(convert<std::int64_t>(DType::i64, DType::i32, std::vector<std::int32_t>{-5, 7}),
            (std::vector<std::int64_t>{-5, 7}));
  EXPECT_EQ(convert<std::int32_t>(DType::i32, DType::u16, std::vector<std::uint16_t>{65535, 0}),
            (std::vector<std::int32_t>{65535, 0}));
  EXPECT_EQ(convert<std::uint16_t>(DType::u16, DType::i64, std::vector<std::int64_t>{65535, 0, 42}),
            (std::vector<std::uint16_t>{65535, 0, 42}));
  std::vector<std::int32_t> dst(2);
  std::int64_t big[2] = {1, std::int64_t{1} << 31};
  EXPECT_TRUE(ThrowsWith([&] { neox::convert_host(dst.data(), DType::i32, big, DType::i64, 2); },
                         "value 2147483648) does not fit i32"));
  std::int64_t low[1] = {std::int64_t{std::numeric_limits<std::int32_t>::min()} - 1};
  EXPECT_TRUE(ThrowsWith([&] { neox::convert_host(dst.data(), DType::i32, low, DType::i64, 1); }, "does not fit i32"));
  std::vector<std::uint16_t> u(1);
  std::int32_t neg[1] = {-1};
  EXPECT_TRUE(ThrowsWith([&] { neox::convert_host(u.data(), DType::u16, neg, DType::i32, 1); }, "does not fit u16"));
  std::int64_t over[1] = {65536};
  EXPECT_TRUE(ThrowsWith([&] { neox::convert_host(u.data(), DType::u16, over, DType::i64, 1); }, "does not fit u16"));
}

TEST(SafeTensorsConvert, RejectsMixedPairsAndNegativeCounts) {
  float f[1] = {1.0f};
  std::int32_t i[1] = {1};
  EXPECT_TRUE(ThrowsWith([&] { neox::convert_host(i, DType::i32, f, DType::f32, 1); }, "cannot convert f32 to i32"));
  EXPECT_TRUE(ThrowsWith([&] { neox::convert_host(f, DType::f32, i, DType::i32, 1); }, "cannot convert i32 to f32"));
  EXPECT_TRUE(ThrowsWith([&] { neox::convert_host(f, DType::bf16, i, DType::u16, 0); }, "cannot convert"));
  EXPECT_TRUE(ThrowsWith([&] { neox::convert_host(f, DType::f32, f, DType::f32, -1); }, "negative element count"));
  neox::convert_host(nullptr, DType::f32, nullptr, DType::f64, 0);  // nothing to do
}

// --- reading ---------------------------------------------------------------------

TEST_F(SafeTensorsRead, UnalignedDataIsConverted) {
  // No header padding and a 2-byte tensor first: f32/f64 data lands on odd
  // addresses (the 163-byte header puts the data at byte 171).
  std::string header =
      R"({"u":{"dtype":"U16","shape":[1],"data_offsets":[0,2]},"f":{"dtype":"F32","shape":[3],"data_offsets":[2,14]},)"
      R"("d":{"dtype":"F64","shape":[1],"data_offsets":[14,22]}})";
  std::string data;
  auto put = [&](const auto& v) { data.append(reinterpret_cast<const char*>(&v), sizeof(v)); };
  put(std::uint16_t{513});
  put(1.5f);
  put(-2.25f);
  put(1e30f);
  put(1.0 / 3.0);
  std::string path = file("unaligned.safetensors");
  write_bytes(path, raw_file(header, data));
  SafeTensorsFile f = SafeTensorsFile::open(path);
  ASSERT_EQ(f.tensors().size(), 3u);
  EXPECT_EQ(f.tensors()[0].name, "u");
  EXPECT_EQ(f.tensors()[1].name, "f");
  EXPECT_EQ(f.tensors()[2].name, "d");
  EXPECT_EQ(values<double>(f.read("f", DType::f64)), (std::vector<double>{1.5, -2.25, static_cast<double>(1e30f)}));
  EXPECT_EQ(values<float>(f.read("f", DType::f32)), (std::vector<float>{1.5f, -2.25f, 1e30f}));
  EXPECT_EQ(values<std::uint16_t>(f.read("f", DType::bf16)), (std::vector<std::uint16_t>{0x3fc0, 0xc010, 0x714a}));
  EXPECT_EQ(values<float>(f.read("d", DType::f32)), std::vector<float>{1.0f / 3.0f});
  EXPECT_EQ(values<std::int64_t>(f.read("u", DType::i64)), std::vector<std::int64_t>{513});
  EXPECT_TRUE(ThrowsWith([&] { (void)f.read("f", DType::i32); }, "cannot convert f32 to i32"));
}

TEST_F(SafeTensorsRead, IntRangeErrorNamesFileAndTensor) {
  std::string path = file("ints.safetensors");
  neox::write_safetensors(path, {{"ids", host_of({2}, DType::i64, std::vector<std::int64_t>{5, 1LL << 40})}});
  SafeTensorsFile f = SafeTensorsFile::open(path);
  EXPECT_TRUE(ThrowsWith([&] { (void)f.read("ids", DType::i32); }, path + ": tensor 'ids'"));
  EXPECT_TRUE(ThrowsWith([&] { (void)f.read("ids", DType::i32); }, "does not fit i32"));
  EXPECT_EQ(values<std::int64_t>(f.read("ids", DType::i64)), (std::vector<std::int64_t>{5, 1LL << 40}));
}

TEST_F(SafeTensorsRead, MissingTensorNamesFileAndTensor) {
  std::string path = file("one.safetensors");
  neox::write_safetensors(path, {{"a", host_of({1}, DType::f32, std::vector<float>{1})}});
  SafeTensorsFile f = SafeTensorsFile::open(path);
  EXPECT_TRUE(ThrowsWith([&] { (void)f.info("nope"); }, path + ": no tensor named 'nope'"));
  EXPECT_TRUE(ThrowsWith([&] { (void)f.view("nope"); }, "no tensor named 'nope'"));
  EXPECT_TRUE(ThrowsWith([&] { (void)f.read("nope", DType::f32); }, "no tensor named 'nope'"));
}

TEST_F(SafeTensorsRead, ViewKeepsMappingAlive) {
  std::string path = file("alive.safetensors");
  std::vector<float> v = {1, 2, 3, 4, 5, 6};
  neox::write_safetensors(path, {{"w", host_of({2, 3}, DType::f32, v)}});
  Tensor view, row;
  {
    SafeTensorsFile f = SafeTensorsFile::open(path);
    view = f.view("w");
    row = f.view("w").rows(1, 2);
  }
  fs::remove(path);  // the mapping outlives both the file object and the name
  EXPECT_EQ(values<float>(view), v);
  EXPECT_EQ(values<float>(row), (std::vector<float>{4, 5, 6}));
  EXPECT_EQ(values<float>(view.view({3, 2})), v);
}

TEST_F(SafeTensorsRead, PaddedHeaderAndZeroLengthData) {
  // Trailing spaces after the JSON are valid padding.
  std::string path = file("ok.safetensors");
  write_bytes(path, raw_file("{" + kEntryA + "}       ", std::string(8, '\0')));
  EXPECT_EQ(SafeTensorsFile::open(path).tensors().size(), 1u);
  // No data at all.
  write_bytes(path, raw_file("{}"));
  EXPECT_TRUE(SafeTensorsFile::open(path).tensors().empty());
  write_bytes(path, raw_file(R"({"__metadata__":{}})"));
  EXPECT_TRUE(SafeTensorsFile::open(path).metadata().empty());
  // Zero-size tensors, several at the same offset, and one at the very end.
  write_bytes(path, raw_file(R"({"z1":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},)"
                             R"("z2":{"dtype":"I64","shape":[3,0],"data_offsets":[0,0]},)"
                             R"("a":{"dtype":"U16","shape":[1],"data_offsets":[0,2]},)"
                             R"("z3":{"dtype":"BF16","shape":[0,7],"data_offsets":[2,2]}})",
                             std::string(2, '\x01')));
  SafeTensorsFile f = SafeTensorsFile::open(path);
  ASSERT_EQ(f.tensors().size(), 4u);
  EXPECT_EQ(f.tensors()[2].name, "a");
  EXPECT_EQ(f.tensors()[3].name, "z3");
  EXPECT_EQ(f.view("z3").numel(), 0);
  EXPECT_EQ(f.read("z2", DType::i32).shape(), (Shape{3, 0}));
  EXPECT_EQ(values<std::uint16_t>(f.read("a", DType::u16)), std::vector<std::uint16_t>{0x0101});
  // Only zero-size tensors and no data.
  write_bytes(path, raw_file(R"({"z":{"dtype":"F64","shape":[0],"data_offsets":[0,0]}})"));
  EXPECT_EQ(SafeTensorsFile::open(path).read("z", DType::f32).numel(), 0);
}

// --- malformed files -----------------------------------------------------------------

TEST_F(SafeTensorsMalformed, FileAndHeaderLength) {
  EXPECT_TRUE(Malformed("", "too short"));
  EXPECT_TRUE(Malformed(std::string("\x02\0\0\0\0\0\0", 7), "too short"));
  EXPECT_TRUE(Malformed(le64(100'000'001) + "{}", "exceeds the limit"));
  EXPECT_TRUE(Malformed(le64(std::numeric_limits<std::uint64_t>::max()) + "{}", "exceeds the limit"));
  EXPECT_TRUE(Malformed(le64(100'000'000) + "{}", "runs past the end of the file"));
  EXPECT_TRUE(Malformed(le64(3) + "{}", "runs past the end of the file"));
  EXPECT_TRUE(OpenFails(file("does-not-exist.safetensors"), "cannot open"));
  EXPECT_TRUE(OpenFails(dir_, "not a regular file"));
}

TEST_F(SafeTensorsMalformed, NotJsonOrNotObject) {
  EXPECT_TRUE(MalformedHeader("{abc", "", "not valid JSON"));
  EXPECT_TRUE(MalformedHeader("", "", "not valid JSON"));
  EXPECT_TRUE(MalformedHeader("{} x", "", "not valid JSON"));
  EXPECT_TRUE(MalformedHeader(std::string("{}\0\0", 4), "", "NUL byte at header offset 2"));
  EXPECT_TRUE(MalformedHeader(std::string("{}\0xyz", 6), "", "not valid JSON"));
  EXPECT_TRUE(MalformedHeader("{\"\xff\":1}", "", "not valid JSON"));
  EXPECT_TRUE(MalformedHeader("{" + kEntryA, std::string(8, '\0'), "not valid JSON"));
  EXPECT_TRUE(MalformedHeader(std::string(100, '[') + std::string(100, ']'), "", "nested deeper"));
  for (const char* h : {"[]", "3", "\"s\"", "null", "true"}) EXPECT_TRUE(MalformedHeader(h, "", "not a JSON object"));
}

TEST_F(SafeTensorsMalformed, EntryFields) {
  EXPECT_TRUE(MalformedHeader(R"({"a":[1]})", "", "tensor 'a': entry is not an object"));
  EXPECT_TRUE(MalformedHeader(R"({"a":"F32"})", "", "tensor 'a': entry is not an object"));
  EXPECT_TRUE(MalformedHeader(R"({"a":{"dtype":"F32","shape":[2]}})", std::string(8, '\0'),
                              "tensor 'a': missing field 'data_offsets'"));
  EXPECT_TRUE(
      MalformedHeader(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0'), "missing field 'dtype'"));
  EXPECT_TRUE(
      MalformedHeader(R"({"a":{"dtype":"F32","data_offsets":[0,8]}})", std::string(8, '\0'), "missing field 'shape'"));
  EXPECT_TRUE(MalformedHeader(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"foo":1}})", std::string(8, '\0'),
                              "tensor 'a': unexpected field 'foo'"));
}

TEST_F(SafeTensorsMalformed, UnsupportedDtypes) {
  for (const char* dt : {"U8", "I8", "BOOL", "F8_E4M3", "F8_E5M2", "I16", "U32", "U64", "C64", "f32", "", "XYZ"}) {
    std::string h = std::string(R"({"t":{"dtype":")") + dt + R"(","shape":[0],"data_offsets":[0,0]}})";
    EXPECT_TRUE(MalformedHeader(h, "", std::string("tensor 't': dtype '") + dt + "' is not supported")) << dt;
  }
  EXPECT_TRUE(MalformedHeader(R"({"t":{"dtype":5,"shape":[0],"data_offsets":[0,0]}})", "", "dtype is not a string"));
}

TEST_F(SafeTensorsMalformed, Shapes) {
  auto h = [](const std::string& shape) {
    return R"({"t":{"dtype":"F32","shape":)" + shape + R"(,"data_offsets":[0,0]}})";
  };
  for (const char* s : {"3", "\"2\"", "{}", "null"})
    EXPECT_TRUE(MalformedHeader(h(s), "", "shape is not an array")) << s;
  for (const char* s : {"[-1]", "[1.5]", "[true]", "[\"2\"]", "[1e3]", "[2,null]", "[18446744073709551616]",
                        "[9223372036854775808]", "[-0.0]"})
    EXPECT_TRUE(MalformedHeader(h(s), "", "is not an array of non-negative integers")) << s;
  EXPECT_TRUE(MalformedHeader(h("[4294967296,4294967296]"), "", "overflows the element count"));
  EXPECT_TRUE(MalformedHeader(h("[4611686018427387904,2]"), "", "overflows the element count"));
  EXPECT_TRUE(MalformedHeader(h("[9223372036854775807]"), "", "overflows the byte count"));
}

TEST_F(SafeTensorsMalformed, DataOffsets) {
  auto h = [](const std::string& off) { return R"({"t":{"dtype":"F32","shape":[2],"data_offsets":)" + off + "}}"; };
  const std::string data(8, '\0');
  for (const char* o :
       {"3", "[0]", "[0,8,9]", "[-1,7]", "[0,8.0]", "[\"0\",8]", "[]", "{}", "[0,18446744073709551616]"})
    EXPECT_TRUE(MalformedHeader(h(o), data, "is not two non-negative integers")) << o;
  EXPECT_TRUE(MalformedHeader(h("[8,0]"), data, "has begin > end"));
  EXPECT_TRUE(MalformedHeader(h("[0,4]"), data, "span 4 bytes but F32[2] needs 8 bytes"));
  EXPECT_TRUE(MalformedHeader(h("[0,12]"), std::string(12, '\0'), "needs 8 bytes"));
  EXPECT_TRUE(
      MalformedHeader(h("[18446744073709551607,18446744073709551615]"), data, "run past the end of the data section"));
}

TEST_F(SafeTensorsMalformed, LayoutMustTileTheDataSection) {
  const std::string b12 = R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]})";
  EXPECT_TRUE(MalformedHeader("{" + kEntryA + "," + b12 + "}", std::string(12, '\0'), "overlaps tensor 'a'"));
  const std::string b20 = R"("b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]})";
  EXPECT_TRUE(MalformedHeader("{" + kEntryA + "," + b20 + "}", std::string(20, '\0'),
                              "gap in the data section: bytes [8, 12)"));
  const std::string b08 = R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  EXPECT_TRUE(MalformedHeader("{" + kEntryA + "," + b08 + "}", std::string(16, '\0'), "overlaps"));
  const std::string b_first_gap = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})";
  EXPECT_TRUE(MalformedHeader(b_first_gap, std::string(12, '\0'), "gap in the data section: bytes [0, 4)"));
  EXPECT_TRUE(
      MalformedHeader("{" + kEntryA + "}", std::string(12, '\0'), "data section has 12 bytes but the tensors cover 8"));
  EXPECT_TRUE(MalformedHeader("{}", std::string(1, '\0'), "data section has 1 bytes but the tensors cover 0"));
  EXPECT_TRUE(MalformedHeader("{" + kEntryA + "}", std::string(4, '\0'), "run past the end of the data section"));
}

TEST_F(SafeTensorsMalformed, Metadata) {
  EXPECT_TRUE(MalformedHeader(R"({"__metadata__":[1]})", "", "__metadata__ is not an object"));
  EXPECT_TRUE(MalformedHeader(R"({"__metadata__":"x"})", "", "__metadata__ is not an object"));
  EXPECT_TRUE(MalformedHeader(R"({"__metadata__":{"k":1}})", "", "__metadata__ value of 'k' is not a string"));
  EXPECT_TRUE(MalformedHeader(R"({"__metadata__":{"a":"b","k":{"x":"y"}}})", "", "value of 'k' is not a string"));
}

TEST_F(SafeTensorsMalformed, DuplicateKeys) {
  EXPECT_TRUE(MalformedHeader("{" + kEntryA + "," + kEntryA + "}", std::string(8, '\0'), "duplicate key 'a'"));
  EXPECT_TRUE(MalformedHeader(R"({"a":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                              std::string(8, '\0'), "duplicate key 'dtype'"));
  EXPECT_TRUE(MalformedHeader(R"({"__metadata__":{"k":"1","k":"2"}})", "", "duplicate key 'k'"));
  // The same key in different objects is fine.
  std::string path = file("ok.safetensors");
  write_bytes(path, raw_file(R"({"__metadata__":{"a":"x"},)" + kEntryA + "}", std::string(8, '\0')));
  EXPECT_EQ(SafeTensorsFile::open(path).metadata().at("a"), "x");
}

// --- writer failures -------------------------------------------------------------

TEST_F(SafeTensorsWriter, FailureLeavesExistingFileUntouched) {
  std::string path = file("model.safetensors");
  neox::write_safetensors(path, {{"a", host_of({2}, DType::f32, std::vector<float>{1, 2})}}, {{"v", "1"}});
  const std::string before = read_bytes(path);
  float buf[2] = {3, 4};
  Tensor on_gpu = Tensor::wrap(buf, {2}, DType::f32, neox::Device{neox::DeviceType::cuda, 0});
  Tensor good = host_of({2}, DType::f32, std::vector<float>{5, 6});

  EXPECT_TRUE(ThrowsWith(
      [&] {
        neox::write_safetensors(path, {{"good", good}, {"x", on_gpu}});
      },
      "tensor 'x' is f32[2] on cuda:0; write_safetensors needs host (cpu) tensors"));
  EXPECT_TRUE(ThrowsWith(
      [&] {
        neox::write_safetensors(path, {{"a", good}, {"a", good}});
      },
      "duplicate tensor name 'a'"));
  EXPECT_TRUE(ThrowsWith([&] { neox::write_safetensors(path, {{"__metadata__", good}}); }, "cannot be used"));
  EXPECT_TRUE(ThrowsWith([&] { neox::write_safetensors(path, {{"u", Tensor()}}); }, "tensor 'u' is undefined"));
  EXPECT_TRUE(ThrowsWith([&] { neox::write_safetensors(path, {{"bad\xff", good}}); }, "UTF-8"));
  EXPECT_TRUE(ThrowsWith([&] { neox::write_safetensors(path, {{"a", good}}, {{"k", "\xc3"}}); }, "UTF-8"));
  EXPECT_EQ(read_bytes(path), before);
  EXPECT_EQ(dir_entries(), std::vector<std::string>{"model.safetensors"});
}

TEST_F(SafeTensorsWriter, IoFailureRemovesTempFile) {
  // The target is a non-empty directory: the data is written, the rename fails.
  std::string target = file("target");
  fs::create_directory(target);
  write_bytes(target + "/keep", "x");
  Tensor good = host_of({2}, DType::f32, std::vector<float>{5, 6});
  EXPECT_TRUE(ThrowsWith([&] { neox::write_safetensors(target, {{"a", good}}); }, "cannot rename"));
  EXPECT_EQ(dir_entries(), std::vector<std::string>{"target"});
  EXPECT_EQ(read_bytes(target + "/keep"), "x");
  // A missing directory: nothing can be created.
  std::string missing = file("no/such/dir/x.safetensors");
  EXPECT_TRUE(ThrowsWith([&] { neox::write_safetensors(missing, {{"a", good}}); }, "cannot create"));
  EXPECT_EQ(dir_entries(), std::vector<std::string>{"target"});
}

// --- the streaming writer ----------------------------------------------------------

// One tensor at a time gives the same bytes as write_safetensors, and the
// file appears only at finish().
TEST_F(SafeTensorsWriter, StreamsTheSameBytesAsTheWholeWriter) {
  Tensor a = host_of({2, 3}, DType::f32, std::vector<float>{1, 2, 3, 4, 5, 6});
  Tensor b = host_of({4}, DType::i32, std::vector<std::int32_t>{7, 8, 9, 10});
  const std::map<std::string, std::string> meta = {{"format", "pt"}};
  const std::string whole = file("whole.safetensors"), streamed = file("streamed.safetensors");
  neox::write_safetensors(whole, {{"a", a}, {"b", b}}, meta);
  {
    neox::SafeTensorsWriter w(streamed, {{"a", DType::f32, {2, 3}}, {"b", DType::i32, {4}}}, meta);
    EXPECT_EQ(w.path(), streamed);
    w.write("a", a);
    EXPECT_FALSE(fs::exists(streamed));
    w.write("b", b);
    EXPECT_FALSE(fs::exists(streamed));
    w.finish();
  }
  EXPECT_EQ(read_bytes(streamed), read_bytes(whole));
  EXPECT_EQ(dir_entries(), (std::vector<std::string>{"streamed.safetensors", "whole.safetensors"}));
}

TEST_F(SafeTensorsWriter, StreamingMistakesNameTheFileAndTensorAndKeepTheOldFile) {
  const std::string path = file("model.safetensors");
  neox::write_safetensors(path, {{"old", host_of({1}, DType::f32, std::vector<float>{1})}});
  const std::string before = read_bytes(path);
  Tensor a = host_of({2}, DType::f32, std::vector<float>{1, 2});
  const std::vector<neox::SafeTensorsWriter::Entry> layout = {{"a", DType::f32, {2}}, {"b", DType::f32, {2}}};
  {
    neox::SafeTensorsWriter w(path, layout);
    EXPECT_TRUE(ThrowsWith([&] { w.write("b", a); }, path + ": tensor 'b' written where the layout has 'a'"));
    EXPECT_TRUE(ThrowsWith([&] { w.write("a", host_of({1}, DType::f32, std::vector<float>{1})); },
                           "tensor 'a' is f32[1] on cpu, the layout says f32[2]"));
    EXPECT_TRUE(ThrowsWith(
        [&] {
          w.write("a", host_of({2}, DType::i32, std::vector<std::int32_t>{1, 2}));
        },
        "the layout says f32[2]"));
    w.write("a", a);
    EXPECT_TRUE(ThrowsWith([&] { w.finish(); }, path + ": finish() after 1 of the 2 tensors (next: 'b')"));
    w.write("b", a);
    EXPECT_TRUE(ThrowsWith([&] { w.write("c", a); }, "tensor 'c' written after the 2 tensors of the layout"));
    // Destroyed without finish(): as if an error stopped the save.
  }
  EXPECT_EQ(read_bytes(path), before);
  EXPECT_EQ(dir_entries(), std::vector<std::string>{"model.safetensors"});
  EXPECT_TRUE(ThrowsWith([&] { neox::SafeTensorsWriter(path, {{"x", DType::f32, {-1}}}); }, "negative dimension"));
  EXPECT_TRUE(ThrowsWith(
      [&] {
        neox::SafeTensorsWriter(path, {{"x", DType::f32, {1}}, {"x", DType::f32, {1}}});
      },
      "duplicate tensor name 'x'"));
  EXPECT_EQ(dir_entries(), std::vector<std::string>{"model.safetensors"});
}

// --- mutation fuzzing -------------------------------------------------------------

struct FuzzStats {
  int opened = 0;
  int rejected = 0;
};

// Opens `path` (holding `bytes`): either it throws neox::Error naming the
// file, or every invariant holds and every tensor can be read.
void check_mutant(const std::string& path, const std::string& bytes, FuzzStats& stats, const std::string& what) {
  std::optional<SafeTensorsFile> opened;
  try {
    opened.emplace(SafeTensorsFile::open(path));
  } catch (const neox::Error& e) {
    ++stats.rejected;
    ASSERT_NE(std::string(e.what()).find(path), std::string::npos) << what << ": " << e.what();
    return;
  } catch (const std::exception& e) {
    FAIL() << what << ": non-neox exception " << e.what();
  } catch (...) {
    FAIL() << what << ": unknown exception";
  }
  ++stats.opened;
  const SafeTensorsFile& f = *opened;
  try {
    ASSERT_GE(bytes.size(), 8u) << what;
    const std::uint64_t n = get_le64(bytes);
    ASSERT_LE(8 + n, bytes.size()) << what;
    const std::uint64_t data_size = bytes.size() - 8 - n;
    std::uint64_t pos = 0;
    for (const auto& t : f.tensors()) {
      ASSERT_EQ(t.begin, pos) << what;
      ASSERT_LE(t.begin, t.end) << what;
      ASSERT_LE(t.end, data_size) << what;
      pos = t.end;
      ASSERT_TRUE(f.contains(t.name)) << what;
      Tensor v = f.view(t.name);
      ASSERT_EQ(v.bytes(), t.end - t.begin) << what;
      ASSERT_EQ(v.shape(), t.shape) << what;
      ASSERT_EQ(0, std::memcmp(v.data(), bytes.data() + 8 + n + t.begin, v.bytes())) << what;
      Tensor r = f.read(t.name, t.dtype);
      ASSERT_EQ(0, std::memcmp(r.data(), v.data(), v.bytes())) << what;
      const bool is_int = t.dtype == DType::i64 || t.dtype == DType::i32 || t.dtype == DType::u16;
      Tensor w = f.read(t.name, is_int ? DType::i64 : DType::f64);
      ASSERT_EQ(w.numel(), v.numel()) << what;
      try {
        (void)f.read(t.name, is_int ? DType::u16 : DType::bf16);
      } catch (const neox::Error& e) {
        ASSERT_TRUE(is_int) << what << ": " << e.what();  // only integer range errors are expected
      }
    }
    ASSERT_EQ(pos, data_size) << what;
  } catch (const std::exception& e) {
    FAIL() << what << ": opened, then threw " << e.what();
  }
}

TEST_F(SafeTensorsFuzz, MutationsEitherOpenCleanlyOrThrowNeoxError) {
  const auto start = std::chrono::steady_clock::now();
  std::string base_path = file("base.safetensors");
  neox::write_safetensors(base_path,
                          {{"w", host_of({2, 3}, DType::f32, std::vector<float>{1, -2, 3.5f, 0, 1e-3f, 7})},
                           {"b", host_of({3}, DType::bf16, std::vector<std::uint16_t>{0x3f80, 0x7f80, 0x0001})},
                           {"ids", host_of({2}, DType::i64, std::vector<std::int64_t>{3, 70000})},
                           {"h", host_of({2}, DType::f16, std::vector<std::uint16_t>{0x3c00, 0x7bff})},
                           {"n", host_of({1, 2}, DType::i32, std::vector<std::int32_t>{-1, 65535})},
                           {"u", host_of({3}, DType::u16, std::vector<std::uint16_t>{1, 2, 3})},
                           {"d", host_of({1}, DType::f64, std::vector<double>{0.25})},
                           {"e", Tensor::empty(nullptr, {0, 4}, DType::f32)}},
                          {{"format", "pt"}});
  const std::string base = read_bytes(base_path);
  const std::size_t n = get_le64(base);
  const std::string header = base.substr(8, n);
  const std::string data = base.substr(8 + n);
  ASSERT_GT(data.size(), 0u);

  std::mt19937_64 rng(20240607);
  auto uniform = [&](std::size_t lo, std::size_t hi) {  // inclusive
    return std::uniform_int_distribution<std::size_t>(lo, hi)(rng);
  };
  const std::string json_chars = "{}[]\":,0123456789-.eE +FIUB\\ \t";
  auto random_char = [&]() -> char {
    if (uniform(0, 1)) return json_chars[uniform(0, json_chars.size() - 1)];
    return static_cast<char>(uniform(0, 255));
  };
  // Rebuilds a file from an edited header, keeping the length field honest
  // most of the time so that the JSON is actually parsed.
  auto with_header = [&](const std::string& h) {
    if (uniform(0, 3) == 0) return le64(n) + h + data;
    return raw_file(h, data);
  };

  const std::string path = file("mutant.safetensors");
  FuzzStats stats;
  int count = 0;
  auto check = [&](const std::string& bytes, const std::string& what) {
    // A fresh file each time: truncating in place makes ext4 flush on close.
    ::unlink(path.c_str());
    write_bytes(path, bytes);
    check_mutant(path, bytes, stats, what);
    ++count;
  };

  check(base, "base");
  ASSERT_EQ(stats.opened, 1);
  // Truncation at every header position and at random data positions.
  for (std::size_t len = 0; len < 8 + n; ++len) check(base.substr(0, len), "truncate " + std::to_string(len));
  for (int i = 0; i < 200; ++i) {
    std::size_t len = uniform(8 + n, base.size() - 1);
    check(base.substr(0, len), "truncate data " + std::to_string(len));
  }
  // Random byte changes in the header (1-3 bytes).
  for (int i = 0; i < 1500; ++i) {
    std::string m = base;
    std::string what = "header bytes";
    for (std::size_t k = uniform(1, 3); k > 0; --k) {
      std::size_t p = uniform(8, 8 + n - 1);
      m[p] = random_char();
      what += " " + std::to_string(p) + "=" + std::to_string(static_cast<unsigned char>(m[p]));
    }
    check(m, what);
  }
  // Random byte changes in the data (always a valid file).
  for (int i = 0; i < 200; ++i) {
    std::string m = base;
    m[uniform(8 + n, base.size() - 1)] = static_cast<char>(uniform(0, 255));
    check(m, "data byte");
  }
  // Random header length values.
  for (int i = 0; i < 300; ++i) {
    std::uint64_t len = 0;
    switch (i % 4) {
      case 0:
        len = rng();
        break;
      case 1:
        len = n + uniform(0, 32) - 16;
        break;
      case 2:
        len = uniform(0, base.size());
        break;
      case 3:
        len = n ^ (std::uint64_t{1} << uniform(0, 63));
        break;
    }
    check(le64(len) + base.substr(8), "header length " + std::to_string(len));
  }
  // JSON edits: replace a number.
  std::vector<std::pair<std::size_t, std::size_t>> numbers;  // [begin, end) in header
  for (std::size_t i = 0; i < header.size();) {
    if (std::isdigit(static_cast<unsigned char>(header[i]))) {
      std::size_t j = i;
      while (j < header.size() && std::isdigit(static_cast<unsigned char>(header[j]))) ++j;
      numbers.emplace_back(i, j);
      i = j;
    } else {
      ++i;
    }
  }
  ASSERT_GT(numbers.size(), 20u);
  const std::vector<std::string> replacements = {"0",
                                                 "1",
                                                 "-1",
                                                 "1.5",
                                                 "1e3",
                                                 "-0",
                                                 "18446744073709551615",
                                                 "18446744073709551616",
                                                 "9223372036854775807",
                                                 "9223372036854775808",
                                                 "4294967296",
                                                 "",
                                                 "[]",
                                                 "null",
                                                 "\"7\""};
  for (int i = 0; i < 1000; ++i) {
    auto [b, e] = numbers[uniform(0, numbers.size() - 1)];
    std::string r;
    switch (uniform(0, 2)) {
      case 0:
        r = replacements[uniform(0, replacements.size() - 1)];
        break;
      case 1:
        r = std::to_string(uniform(0, 64));
        break;
      case 2:
        r = std::to_string(std::stoull(header.substr(b, e - b)) + uniform(0, 8) - 4);
        break;
    }
    std::string h = header.substr(0, b) + r + header.substr(e);
    check(with_header(h), "number edit " + h);
  }
  // JSON edits: remove or insert a structural character, or swap two bytes.
  for (int i = 0; i < 800; ++i) {
    std::string h = header;
    switch (i % 3) {
      case 0: {
        std::size_t p;
        do p = uniform(0, h.size() - 1);
        while (std::string("{}[]:,\"").find(h[p]) == std::string::npos);
        h.erase(p, 1);
        break;
      }
      case 1:
        h.insert(uniform(0, h.size()), 1, "{}[]:,\" 0-"[uniform(0, 9)]);
        break;
      case 2:
        std::swap(h[uniform(0, h.size() - 1)], h[uniform(0, h.size() - 1)]);
        break;
    }
    check(with_header(h), "structure edit " + h);
  }
  // JSON edits: replace a string token (dtype names, keys, tensor names).
  std::vector<std::pair<std::size_t, std::size_t>> strings;  // contents of "..."
  for (std::size_t i = 0; i < header.size(); ++i)
    if (header[i] == '"') {
      std::size_t j = header.find('"', i + 1);
      strings.emplace_back(i + 1, j);
      i = j;
    }
  const std::vector<std::string> words = {"F32", "F64",  "BF16",  "F16",   "I64",          "I32",          "U16",
                                          "U8",  "BOOL", "dtype", "shape", "data_offsets", "__metadata__", "w",
                                          "b",   "ids",  "e",     "",      "x\\\"y",       "\\u00e9",      "\\ud800"};
  for (int i = 0; i < 500; ++i) {
    auto [b, e] = strings[uniform(0, strings.size() - 1)];
    std::string h = header.substr(0, b) + words[uniform(0, words.size() - 1)] + header.substr(e);
    check(with_header(h), "string edit " + h);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << "[ fuzz     ] " << count << " mutants: " << stats.opened << " opened, " << stats.rejected
            << " rejected, " << seconds << " s\n";
  EXPECT_GE(count, 4000);
  EXPECT_EQ(stats.opened + stats.rejected, count);
  EXPECT_GT(stats.opened, 200);
  EXPECT_GT(stats.rejected, 2000);
}

// --- Hugging Face reference files ------------------------------------------------------

TEST_F(SafeTensorsHF, ReadsFilesWrittenByHuggingFace) {
  const fs::path root = fs::path(neox::test::testdata_dir()) / "hf";
  if (!fs::exists(root / "neox_tiny_parallel" / "hf" / "model.safetensors")) GTEST_SKIP() << "no test data at " << root;

  struct Case {
    std::string name;
    std::int64_t vocab, hidden, batch, seq, tensors;
    std::vector<double> embed_out_first;
    std::vector<std::int64_t> ids_first;
  };
  const std::vector<Case> cases = {
      {"neox_tiny_parallel",
       512,
       64,
       2,
       16,
       28,
       {-0.00021810080215800554, 0.009371423162519932, 0.011217939667403698},
       {351, 11, 337}},
      {"neox_tiny_sequential",
       384,
       96,
       3,
       24,
       40,
       {-0.04458499327301979, 0.024260124191641808, -0.025873305276036263},
       {}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const fs::path dir = root / c.name;
    SafeTensorsFile model = SafeTensorsFile::open((dir / "hf" / "model.safetensors").string());
    EXPECT_EQ(model.metadata().at("format"), "pt");
    EXPECT_EQ(static_cast<std::int64_t>(model.tensors().size()), c.tensors);
    const auto& eo = model.info("embed_out.weight");
    EXPECT_EQ(eo.dtype, DType::f64);
    EXPECT_EQ(eo.shape, (Shape{c.vocab, c.hidden}));
    EXPECT_EQ(eo.begin, 0u);  // first in file order
    EXPECT_EQ(model.info("gpt_neox.embed_in.weight").shape, (Shape{c.vocab, c.hidden}));
    auto w = values<double>(model.read("embed_out.weight", DType::f64));
    for (std::size_t i = 0; i < c.embed_out_first.size(); ++i) EXPECT_EQ(w[i], c.embed_out_first[i]);
    auto w32 = values<float>(model.read("embed_out.weight", DType::f32));
    for (std::size_t i = 0; i < w.size(); ++i) ASSERT_EQ(w32[i], static_cast<float>(w[i]));
    for (double v : values<double>(model.read("gpt_neox.final_layer_norm.weight", DType::f64))) EXPECT_EQ(v, 1.0);
    for (const auto& t : model.tensors()) {
      EXPECT_EQ(t.dtype, DType::f64) << t.name;
      for (double v : values<double>(model.view(t.name))) ASSERT_TRUE(std::isfinite(v) && std::fabs(v) < 100) << t.name;
    }

    SafeTensorsFile fwd = SafeTensorsFile::open((dir / "forward.safetensors").string());
    EXPECT_EQ(fwd.info("input_ids").dtype, DType::i64);
    EXPECT_EQ(fwd.info("input_ids").shape, (Shape{c.batch, c.seq}));
    EXPECT_EQ(fwd.info("labels").shape, (Shape{c.batch, c.seq}));
    EXPECT_EQ(fwd.info("logits").dtype, DType::f64);
    EXPECT_EQ(fwd.info("logits").shape, (Shape{c.batch, c.seq, c.vocab}));
    auto ids = values<std::int32_t>(fwd.read("input_ids", DType::i32));
    for (std::size_t i = 0; i < c.ids_first.size(); ++i) EXPECT_EQ(ids[i], c.ids_first[i]);
    for (auto id : ids) ASSERT_TRUE(id >= 0 && id < c.vocab);
    for (auto id : values<std::uint16_t>(fwd.read("labels", DType::u16))) ASSERT_LT(id, c.vocab);
    for (double v : values<double>(fwd.read("logits", DType::f64))) ASSERT_TRUE(std::isfinite(v));

    // Gradients: one per parameter, same shapes (torch names embed_out
    // lm_head.weight there).
    SafeTensorsFile grads = SafeTensorsFile::open((dir / "grads.safetensors").string());
    EXPECT_TRUE(grads.metadata().empty());
    EXPECT_EQ(grads.tensors().size(), model.tensors().size());
    for (const auto& g : grads.tensors()) {
      const std::string param = g.name == "lm_head.weight" ? "embed_out.weight" : g.name;
      ASSERT_TRUE(model.contains(param)) << g.name;
      EXPECT_EQ(g.shape, model.info(param).shape) << g.name;
      EXPECT_EQ(g.dtype, DType::f64);
    }

    // Rewriting the model with our writer gives the same tensors and metadata.
    std::vector<std::pair<std::string, Tensor>> all;
    for (const auto& t : model.tensors()) all.emplace_back(t.name, model.view(t.name));
    const std::string copy = file(c.name + ".safetensors");
    neox::write_safetensors(copy, all, model.metadata());
    SafeTensorsFile again = SafeTensorsFile::open(copy);
    EXPECT_EQ(again.metadata(), model.metadata());
    ASSERT_EQ(again.tensors().size(), model.tensors().size());
    for (std::size_t i = 0; i < all.size(); ++i) {
      const auto& a = again.tensors()[i];
      const auto& b = model.tensors()[i];
      EXPECT_EQ(a.name, b.name);
      EXPECT_EQ(a.begin, b.begin);
      EXPECT_EQ(a.end, b.end);
      EXPECT_EQ(0, std::memcmp(again.view(a.name).data(), model.view(b.name).data(), a.end - a.begin));
    }
  }
}

}  // namespace
