// SPDX-License-Identifier: Apache-2.0
// CRC32C (neox/io/crc32c.h): the check values, the SSE4.2 path against the
// slicing-by-8 tables at every length and alignment, and crc32c_extend. The
// throughput figure of docs/performance.md comes from Crc32c.Throughput,
// which runs only when NEOX_BENCH_CRC_BYTES is set (a benchmark, not a test).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "neox/io/crc32c.h"

namespace {

// Bit by bit, straight from the definition (reflected polynomial 0x82F63B78).
std::uint32_t reference_crc(const unsigned char* p, std::size_t n) {
  std::uint32_t c = 0xFFFFFFFFu;
  for (std::size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
  }
  return ~c;
}

TEST(Crc32c, CheckValues) {
  const std::string digits = "123456789";
  EXPECT_EQ(neox::crc32c(digits.data(), digits.size()), 0xE3069283u);
  EXPECT_EQ(neox::crc32c_extend_portable(0, digits.data(), digits.size()), 0xE3069283u);
  EXPECT_EQ(neox::crc32c("", 0), 0u);
  const std::string impl = neox::crc32c_implementation();
  EXPECT_TRUE(impl == "sse4.2" || impl == "slicing-by-8") << impl;
}

TEST(Crc32c, BothImplementationsAgreeAtEveryLengthAndAlignment) {
  std::mt19937 rng(17);
  std::vector<unsigned char> buf(600);
  for (auto& b : buf) b = static_cast<unsigned char>(rng());
  for (std::size_t offset = 0; offset < 8; ++offset)
    for (std::size_t n = 0; n + offset <= 300; ++n) {
      const unsigned char* p = buf.data() + offset;
      const std::uint32_t want = reference_crc(p, n);
      ASSERT_EQ(neox::crc32c(p, n), want) << "offset " << offset << " length " << n;
      ASSERT_EQ(neox::crc32c_extend_portable(0, p, n), want) << "offset " << offset << " length " << n;
      // Split anywhere: extend continues the CRC.
      const std::size_t cut = n / 3;
      ASSERT_EQ(neox::crc32c_extend(neox::crc32c(p, cut), p + cut, n - cut), want);
      ASSERT_EQ(neox::crc32c_extend_portable(neox::crc32c_extend_portable(0, p, cut), p + cut, n - cut), want);
    }
}

TEST(Crc32c, Throughput) {
  const char* env = std::getenv("NEOX_BENCH_CRC_BYTES");
  if (!env) GTEST_SKIP() << "a benchmark: set NEOX_BENCH_CRC_BYTES (e.g. 1073741824) to run it";
  const std::size_t n = std::strtoull(env, nullptr, 10);
  std::vector<unsigned char> buf(n);
  std::mt19937_64 rng(1);
  for (std::size_t i = 0; i + 8 <= n; i += 8) {
    const std::uint64_t v = rng();
    std::memcpy(buf.data() + i, &v, 8);
  }
  auto time = [&](auto&& fn) {
    double best = 1e30;
    std::uint32_t crc = 0;
    for (int rep = 0; rep < 3; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      crc = fn();
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return std::pair{best, crc};
  };
  const auto [fast, a] = time([&] { return neox::crc32c(buf.data(), n); });
  const auto [portable, b] = time([&] { return neox::crc32c_extend_portable(0, buf.data(), n); });
  EXPECT_EQ(a, b);
  std::printf("crc32c over %zu bytes (best of 3): %s %.2f GB/s, slicing-by-8 %.2f GB/s\n", n,
              neox::crc32c_implementation(), static_cast<double>(n) / fast / 1e9,
              static_cast<double>(n) / portable / 1e9);
}

}  // namespace
