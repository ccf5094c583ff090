// SPDX-License-Identifier: Apache-2.0
// LineReader: lines of plain, gzip and zstd files, across its buffers.
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "compressed_files.h"
#include "neox/io/line_reader.h"
#include "test_support.h"

namespace {

TEST(LineReader, SplitsLinesAcrossBufferBoundaries) {
  const auto dir = neox::test::temp_dir("line_reader", "lines");
  std::string big(3u << 20, 'q');  // longer than the 1 MiB buffers
  const std::string data = "a\r\n\nb\n" + big + "\nlast";
  for (const auto& [name, bytes] : std::vector<std::pair<std::string, std::string>>{
           {"p.txt", data}, {"p.gz", neox::test::gzip_bytes(data)}, {"p.zst", neox::test::zstd_bytes(data)}}) {
    std::ofstream(dir + "/" + name, std::ios::binary) << bytes;
    neox::LineReader r(dir + "/" + name);
    std::vector<std::string> lines;
    for (std::string l; r.next_line(l);) lines.push_back(l);
    ASSERT_EQ(lines.size(), 5u) << name;
    EXPECT_EQ(lines[0], "a");
    EXPECT_EQ(lines[1], "");
    EXPECT_EQ(lines[2], "b");
    EXPECT_EQ(lines[3], big);
    EXPECT_EQ(lines[4], "last");
    EXPECT_EQ(r.line_number(), 5);
    EXPECT_EQ(r.file_bytes_read(), static_cast<std::int64_t>(bytes.size()));
  }
  const std::string err = neox::test::error_of([&] { neox::LineReader r(dir + "/missing.gz"); });
  EXPECT_NE(err.find("missing.gz: cannot open"), std::string::npos) << err;
}

}  // namespace
