// SPDX-License-Identifier: Apache-2.0
// Plain, gzip (zlib's inflate) and zstd (ZSTD_decompressStream) files read
// through one 1 MiB input buffer and one output buffer, line by line.
#include "neox/io/line_reader.h"

#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "neox/error.h"

namespace neox {

namespace {
constexpr std::size_t kChunk = 1 << 20;
enum class Kind { plain, gzip, zstd };
}  // namespace

struct LineReader::Impl {
  std::string path;
  std::FILE* file = nullptr;
  Kind kind = Kind::plain;
  std::vector<char> in;  // raw bytes from the file
  std::size_t in_pos = 0, in_len = 0;
  bool file_eof = false;
  std::vector<char> out;  // decompressed bytes not yet returned
  std::size_t out_pos = 0, out_len = 0;
  bool stream_end = false;  // nothing more to decompress
  std::int64_t line = 0;
  std::int64_t file_bytes = 0;
  z_stream gz{};
  bool gz_init = false;
  bool gz_member_done = true;  // between gzip members
  ZSTD_DStream* zs = nullptr;
  std::size_t zs_last = 0;  // last ZSTD_decompressStream hint: 0 = frame complete

  ~Impl() {
    if (gz_init) inflateEnd(&gz);
    if (zs) ZSTD_freeDStream(zs);
    if (file) std::fclose(file);
  }

  [[noreturn]] void fail(const std::string& what) const {
    throw Error(path + ":" + std::to_string(line + 1) + ": " + what);
  }

  // Refills `in` when it is empty; false at the end of the file.
  bool fill_input() {
    if (in_pos < in_len) return true;
    if (file_eof) return false;
    errno = 0;
    in_len = std::fread(in.data(), 1, in.size(), file);
    in_pos = 0;
    if (in_len < in.size()) {
      if (std::ferror(file)) fail(std::string("read error: ") + std::strerror(errno));
      file_eof = true;
    }
    file_bytes += static_cast<std::int64_t>(in_len);
    return in_len > 0;
  }

  // Appends decompressed bytes after out[out_len]; false when the stream has ended.
  bool produce() {
    if (stream_end) return false;
    if (out_pos > 0) {  // keep the unreturned tail at the front
      std::memmove(out.data(), out.data() + out_pos, out_len - out_pos);
      out_len -= out_pos;
      out_pos = 0;
    }
    if (out.size() - out_len < kChunk) out.resize(out_len + kChunk);
    const std::size_t before = out_len;
    while (out_len == before) {
      const bool have_input = fill_input();
      if (!have_input && kind == Kind::plain) {
        stream_end = true;
        return false;
      }
      if (kind == Kind::plain) {
        const std::size_t n = std::min(in_len - in_pos, out.size() - out_len);
        std::memcpy(out.data() + out_len, in.data() + in_pos, n);
        in_pos += n;
        out_len += n;
        continue;
      }
      // A decompressor may still hold output when the file has ended: call it
      // once more with no input, and only then decide the stream is cut short.
      if (!have_input && kind == Kind::gzip && gz_member_done) {
        stream_end = true;
        return false;
      }
      if (!have_input && kind == Kind::zstd && zs_last == 0) {
        stream_end = true;
        return false;
      }
      if (kind == Kind::gzip) {
        if (gz_member_done) {
          if (inflateReset(&gz) != Z_OK) fail("gzip: inflateReset failed");
          gz_member_done = false;
        }
        gz.next_in = reinterpret_cast<Bytef*>(in.data() + in_pos);
        gz.avail_in = static_cast<uInt>(in_len - in_pos);
        gz.next_out = reinterpret_cast<Bytef*>(out.data() + out_len);
        gz.avail_out = static_cast<uInt>(out.size() - out_len);
        const int rc = inflate(&gz, Z_NO_FLUSH);
        in_pos = in_len - gz.avail_in;
        out_len = out.size() - gz.avail_out;
        if (rc == Z_STREAM_END) {
          gz_member_done = true;
        } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
          fail(std::string("corrupt gzip stream: ") + (gz.msg ? gz.msg : zError(rc)));
        }
      } else {
        ZSTD_inBuffer ib{in.data(), in_len, in_pos};
        ZSTD_outBuffer ob{out.data(), out.size(), out_len};
        const std::size_t rc = ZSTD_decompressStream(zs, &ob, &ib);
        if (ZSTD_isError(rc)) fail(std::string("corrupt zstd stream: ") + ZSTD_getErrorName(rc));
        zs_last = rc;
        in_pos = ib.pos;
        out_len = ob.pos;
      }
      if (!have_input && out_len == before && !gz_member_done && kind == Kind::gzip)
        fail("truncated gzip stream (the file ends inside compressed data)");
      if (!have_input && out_len == before && kind == Kind::zstd && zs_last != 0)
        fail("truncated zstd stream (the file ends inside a frame)");
    }
    return true;
  }
};

LineReader::LineReader(const std::string& path) : impl_(std::make_unique<Impl>()) {
  Impl& r = *impl_;
  r.path = path;
  errno = 0;
  r.file = std::fopen(path.c_str(), "rb");
  if (!r.file) throw Error(path + ": cannot open: " + std::strerror(errno));
  r.in.resize(kChunk);
  r.fill_input();
  const auto* b = reinterpret_cast<const unsigned char*>(r.in.data());
  if (r.in_len >= 2 && b[0] == 0x1f && b[1] == 0x8b) {
    r.kind = Kind::gzip;
    // 15 + 16: gzip wrapper only.
    if (inflateInit2(&r.gz, 15 + 16) != Z_OK) throw Error(path + ": zlib inflateInit2 failed");
    r.gz_init = true;
  } else if (r.in_len >= 4 && b[0] == 0x28 && b[1] == 0xb5 && b[2] == 0x2f && b[3] == 0xfd) {
    r.kind = Kind::zstd;
    r.zs = ZSTD_createDStream();
    if (!r.zs) throw Error(path + ": ZSTD_createDStream failed");
    ZSTD_initDStream(r.zs);
  }
}

LineReader::~LineReader() = default;

bool LineReader::next_line(std::string& line) {
  Impl& r = *impl_;
  std::size_t scanned = r.out_pos;
  for (;;) {
    const char* start = r.out.data() + r.out_pos;
    const void* nl = r.out_len > scanned ? std::memchr(r.out.data() + scanned, '\n', r.out_len - scanned) : nullptr;
    if (nl) {
      const std::size_t len = static_cast<const char*>(nl) - start;
      line.assign(start, len);
      r.out_pos += len + 1;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      ++r.line;
      return true;
    }
    const std::size_t pending = r.out_len - r.out_pos;
    if (!r.produce()) {
      if (r.out_len == r.out_pos) return false;
      line.assign(r.out.data() + r.out_pos, r.out_len - r.out_pos);
      r.out_pos = r.out_len;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      ++r.line;
      return true;
    }
    scanned = r.out_pos + pending;  // produce() moved the pending bytes to the front
  }
}

std::string LineReader::read_all() {
  Impl& r = *impl_;
  std::string text;
  for (;;) {
    text.append(r.out.data() + r.out_pos, r.out_len - r.out_pos);
    r.out_pos = r.out_len;
    if (!r.produce()) return text;
  }
}

std::size_t LineReader::read_some(std::string& out, std::size_t max) {
  Impl& r = *impl_;
  if (max == 0) return 0;
  if (r.out_pos == r.out_len && !r.produce()) return 0;
  const std::size_t n = std::min(max, r.out_len - r.out_pos);
  out.append(r.out.data() + r.out_pos, n);
  r.out_pos += n;
  return n;
}

const std::string& LineReader::path() const { return impl_->path; }
std::int64_t LineReader::line_number() const { return impl_->line; }
std::int64_t LineReader::file_bytes_read() const { return impl_->file_bytes; }
const char* LineReader::compression() const {
  switch (impl_->kind) {
    case Kind::gzip:
      return "gzip";
    case Kind::zstd:
      return "zstd";
    default:
      return "plain";
  }
}

}  // namespace neox
