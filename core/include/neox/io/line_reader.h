// SPDX-License-Identifier: Apache-2.0
// Reading a plain, gzip or zstd file as a stream of bytes or of lines, in
// bounded memory (the preprocessing of jsonl corpora, docs/data.md). The
// compression is recognised by the file's first bytes (gzip 1f 8b, zstd
// 28 b5 2f fd), not by its name; concatenated gzip members and zstd frames
// are read one after the other.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "neox/export.h"

namespace neox {

class NEOX_API LineReader {
 public:
  // Opens `path`; throws neox::Error naming it when it cannot be opened.
  explicit LineReader(const std::string& path);
  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  // The next line without its "\n" (or "\r\n"); false at the end of the
  // file. A last line without "\n" is still a line. Throws neox::Error
  // "PATH:LINE: ..." for a corrupt or truncated compressed stream or a read
  // error.
  bool next_line(std::string& line);
  // The rest of the file, decompressed (a plain-text document).
  std::string read_all();
  // Appends up to `max` more decompressed bytes to `out`, at least one unless
  // the file has ended; returns how many (0 at the end of the file). Errors
  // as next_line's.
  std::size_t read_some(std::string& out, std::size_t max);

  const std::string& path() const;
  // Number of the line last returned by next_line (1-based).
  std::int64_t line_number() const;
  // Bytes read from the file so far (compressed bytes for gz/zst).
  std::int64_t file_bytes_read() const;
  // "plain", "gzip" or "zstd".
  const char* compression() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace neox
