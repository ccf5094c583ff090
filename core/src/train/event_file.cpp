// SPDX-License-Identifier: Apache-2.0
#include "event_file.h"

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string_view>

namespace neox {

namespace fs = std::filesystem;

std::uint32_t masked_crc32c(const void* data, std::size_t size) {
  const std::uint32_t crc = crc32c(data, size);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

namespace {

// --- Protocol buffers, the few pieces an Event needs -----------------------
//
// A message is a sequence of fields; each is a key varint
// (field_number << 3 | wire_type) followed by its payload:
//   wire type 0: a varint (int64, enum);
//   wire type 1: 8 bytes little-endian (double);
//   wire type 2: a varint byte count, then the bytes (string, nested message);
//   wire type 5: 4 bytes little-endian (float).
// A varint is 7 bits per byte, least significant group first, the high bit
// set on every byte but the last; a negative int64 is its two's complement
// as uint64 (10 bytes).
//
// The fields used (event.proto, summary.proto):
//   Event:      1 wall_time double, 2 step int64, 3 file_version string,
//               5 summary Summary, 7 session_log SessionLog (6 is the
//               deprecated log_message)
//   Summary:    1 value repeated Summary.Value
//   Value:      1 tag string, 2 simple_value float
//   SessionLog: 1 status enum (START = 1)
enum WireType : unsigned { kVarint = 0, kFixed64 = 1, kBytes = 2, kFixed32 = 5 };

namespace event_field {
constexpr unsigned wall_time = 1, step = 2, file_version = 3, summary = 5, session_log = 7;
}
constexpr unsigned kSummaryValue = 1;
constexpr unsigned kValueTag = 1, kValueSimpleValue = 2;
constexpr unsigned kSessionLogStatus = 1;
constexpr std::uint64_t kSessionLogStart = 1;
const char* const kFileVersion = "brain.Event:2";

class ProtoWriter {
 public:
  void varint_field(unsigned field, std::uint64_t v) {
    key(field, kVarint);
    varint(v);
  }
  void double_field(unsigned field, double v) {
    key(field, kFixed64);
    std::uint64_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    little_endian(bits, 8);
  }
  void float_field(unsigned field, float v) {
    key(field, kFixed32);
    std::uint32_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    little_endian(bits, 4);
  }
  // A string, or a nested message's encoding.
  void bytes_field(unsigned field, const std::string& bytes) {
    key(field, kBytes);
    varint(bytes.size());
    out_ += bytes;
  }
  const std::string& bytes() const { return out_; }

 private:
  void key(unsigned field, WireType type) { varint(static_cast<std::uint64_t>(field) << 3 | type); }
  void varint(std::uint64_t v) {
    while (v >= 0x80) {
      out_ += static_cast<char>((v & 0x7f) | 0x80);
      v >>= 7;
    }
    out_ += static_cast<char>(v);
  }
  void little_endian(std::uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) out_ += static_cast<char>((v >> (8 * i)) & 0xff);
  }
  std::string out_;
};

std::uint64_t read_le(const unsigned char* p, int bytes) {
  std::uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= static_cast<std::uint64_t>(p[i]) << (8 * i);
  return v;
}

// Walks the fields of one message; false from next() at its end, and
// `malformed` set when a field runs past it.
class ProtoReader {
 public:
  explicit ProtoReader(std::string_view data) : data_(data) {}

  struct Field {
    unsigned number = 0;
    unsigned type = 0;
    std::uint64_t integer = 0;  // varint, fixed64 and fixed32 payloads
    std::string_view bytes;     // wire type 2
  };

  bool next(Field& f) {
    if (pos_ == data_.size() || malformed) return false;
    std::uint64_t key;
    if (!varint(key)) return fail();
    f.number = static_cast<unsigned>(key >> 3);
    f.type = static_cast<unsigned>(key & 7);
    if (f.number == 0) return fail();
    switch (f.type) {
      case kVarint:
        return varint(f.integer) || fail();
      case kFixed64:
      case kFixed32: {
        const std::size_t n = f.type == kFixed64 ? 8 : 4;
        if (data_.size() - pos_ < n) return fail();
        f.integer = read_le(reinterpret_cast<const unsigned char*>(data_.data() + pos_), static_cast<int>(n));
        pos_ += n;
        return true;
      }
      case kBytes: {
        std::uint64_t n;
        if (!varint(n) || n > data_.size() - pos_) return fail();
        f.bytes = data_.substr(pos_, static_cast<std::size_t>(n));
        pos_ += static_cast<std::size_t>(n);
        return true;
      }
      default:  // groups (3, 4) are not used by these messages
        return fail();
    }
  }

  bool malformed = false;

 private:
  bool fail() {
    malformed = true;
    return false;
  }
  bool varint(std::uint64_t& v) {
    v = 0;
    for (int shift = 0; shift < 64 && pos_ < data_.size(); shift += 7) {
      const auto b = static_cast<unsigned char>(data_[pos_++]);
      v |= static_cast<std::uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) return true;
    }
    return false;
  }
  std::string_view data_;
  std::size_t pos_ = 0;
};

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string hostname() {
  char buf[HOST_NAME_MAX + 1] = {};
  if (gethostname(buf, sizeof buf - 1) != 0 || !buf[0]) return "localhost";
  std::string name = buf;
  for (char& c : name)
    if (c == '/') c = '_';
  return name;
}

}  // namespace

void EventFileWriter::Closer::operator()(std::FILE* f) const { std::fclose(f); }

EventFileWriter::EventFileWriter(const std::string& dir) {
  const auto seconds = static_cast<long long>(now_seconds());
  const std::string base =
      (fs::path(dir) / ("events.out.tfevents." + std::to_string(seconds) + "." + hostname())).string();
  // "x": exclusive creation (C11), so that an existing file, an earlier
  // run's, is never truncated. The file is written in place, not renamed
  // into place: like metrics.jsonl it is a log that TensorBoard may read
  // while it grows, and a crash leaves every flushed record readable.
  for (int n = 0; !file_; ++n) {
    path_ = n == 0 ? base : base + "." + std::to_string(n);
    file_.reset(std::fopen(path_.c_str(), "wbx"));
    if (!file_ && (errno != EEXIST || n >= 1000))
      throw Error(path_ + ": cannot create the TensorBoard event file: " + std::strerror(errno));
  }
  ProtoWriter event;
  event.double_field(event_field::wall_time, now_seconds());
  event.bytes_field(event_field::file_version, kFileVersion);
  write_record(event.bytes());
  flush();
}

EventFileWriter::~EventFileWriter() = default;

void EventFileWriter::add_scalar(const std::string& tag, double value, std::int64_t step, double wall_time) {
  ProtoWriter v;
  v.bytes_field(kValueTag, tag);
  v.float_field(kValueSimpleValue, static_cast<float>(value));
  ProtoWriter summary;
  summary.bytes_field(kSummaryValue, v.bytes());
  ProtoWriter event;
  event.double_field(event_field::wall_time, wall_time < 0 ? now_seconds() : wall_time);
  event.varint_field(event_field::step, static_cast<std::uint64_t>(step));
  event.bytes_field(event_field::summary, summary.bytes());
  write_record(event.bytes());
}

void EventFileWriter::add_session_start(std::int64_t step, double wall_time) {
  ProtoWriter session;
  session.varint_field(kSessionLogStatus, kSessionLogStart);
  ProtoWriter event;
  event.double_field(event_field::wall_time, wall_time < 0 ? now_seconds() : wall_time);
  event.varint_field(event_field::step, static_cast<std::uint64_t>(step));
  event.bytes_field(event_field::session_log, session.bytes());
  write_record(event.bytes());
}

// One fwrite per record: a crash in the middle leaves at most the last
// record incomplete, which readers (ours and TensorBoard's) recognise.
void EventFileWriter::write_record(const std::string& data) {
  unsigned char header[12];
  const std::uint64_t length = data.size();
  for (int i = 0; i < 8; ++i) header[i] = static_cast<unsigned char>(length >> (8 * i));
  const std::uint32_t length_crc = masked_crc32c(header, 8);
  for (int i = 0; i < 4; ++i) header[8 + i] = static_cast<unsigned char>(length_crc >> (8 * i));
  const std::uint32_t data_crc = masked_crc32c(data.data(), data.size());
  std::string record(reinterpret_cast<const char*>(header), sizeof header);
  record += data;
  for (int i = 0; i < 4; ++i) record += static_cast<char>((data_crc >> (8 * i)) & 0xff);
  if (std::fwrite(record.data(), 1, record.size(), file_.get()) != record.size())
    throw Error(path_ + ": cannot write the TensorBoard event file: " + std::strerror(errno));
}

void EventFileWriter::flush() {
  if (std::fflush(file_.get()) != 0)
    throw Error(path_ + ": cannot write the TensorBoard event file: " + std::strerror(errno));
}

EventFileContents read_event_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open the event file");
  std::ostringstream ss;
  ss << in.rdbuf();
  const std::string file = ss.str();
  const auto* bytes = reinterpret_cast<const unsigned char*>(file.data());
  const std::uint64_t size = file.size();

  auto at = [&](std::uint64_t offset) { return path + ": record at byte offset " + std::to_string(offset); };
  // `record_size`: the bytes the record needs ("at least 16" while its
  // length is unread).
  auto truncated = [&](std::uint64_t offset, const std::string& record_size) {
    throw TruncatedEventFile(at(offset) + ": truncated: the file ends " + std::to_string(size - offset) +
                                 " bytes into this record of " + record_size +
                                 " bytes (a run that stopped while writing it leaves this; every record "
                                 "before it is intact)",
                             offset);
  };

  if (size == 0)
    throw TruncatedEventFile(path + ": empty: truncated before its first record (the file version) was written", 0);
  EventFileContents out;
  std::uint64_t offset = 0;
  for (int index = 0; offset < size; ++index) {
    const std::uint64_t left = size - offset;
    if (left < 12) truncated(offset, "at least 16");
    const unsigned char* rec = bytes + offset;
    const std::uint32_t length_crc = static_cast<std::uint32_t>(read_le(rec + 8, 4));
    if (masked_crc32c(rec, 8) != length_crc)
      throw Error(at(offset) + ": the CRC32C of the length does not match (the file is corrupt)");
    const std::uint64_t length = read_le(rec, 8);
    // Compared without overflow: the length could be near 2^64.
    if (length > left - 12 || left - 12 - length < 4)
      truncated(offset, length <= UINT64_MAX - 16 ? std::to_string(16 + length) : "2^64 or more");
    const std::string_view data(file.data() + offset + 12, static_cast<std::size_t>(length));
    const std::uint32_t data_crc = static_cast<std::uint32_t>(read_le(rec + 12 + length, 4));
    if (masked_crc32c(data.data(), data.size()) != data_crc)
      throw Error(at(offset) + ": the CRC32C of the " + std::to_string(length) +
                  " data bytes does not match (the file is corrupt)");

    auto malformed = [&](const std::string& what) {
      throw Error(at(offset) + ": not a valid Event message (" + what + ")");
    };
    double wall_time = 0.0;
    std::int64_t step = 0;
    std::vector<std::pair<std::string, float>> values;
    bool session_start = false;
    ProtoReader event(data);
    ProtoReader::Field f;
    while (event.next(f)) {
      if (f.number == event_field::wall_time && f.type == kFixed64) {
        std::memcpy(&wall_time, &f.integer, sizeof wall_time);
      } else if (f.number == event_field::step && f.type == kVarint) {
        step = static_cast<std::int64_t>(f.integer);
      } else if (f.number == event_field::file_version && f.type == kBytes) {
        out.file_version = std::string(f.bytes);
      } else if (f.number == event_field::summary && f.type == kBytes) {
        ProtoReader summary(f.bytes);
        ProtoReader::Field s;
        while (summary.next(s)) {
          if (s.number != kSummaryValue || s.type != kBytes) continue;
          ProtoReader value(s.bytes);
          ProtoReader::Field v;
          std::string tag;
          bool has_value = false;
          float simple = 0.0f;
          while (value.next(v)) {
            if (v.number == kValueTag && v.type == kBytes) tag = std::string(v.bytes);
            if (v.number == kValueSimpleValue && v.type == kFixed32) {
              const auto bits = static_cast<std::uint32_t>(v.integer);
              std::memcpy(&simple, &bits, sizeof simple);
              has_value = true;
            }
          }
          if (value.malformed) malformed("a Summary.Value runs past its end");
          if (has_value) values.emplace_back(tag, simple);  // other kinds (images, histograms) are skipped
        }
        if (summary.malformed) malformed("its Summary runs past its end");
      } else if (f.number == event_field::session_log && f.type == kBytes) {
        ProtoReader session(f.bytes);
        ProtoReader::Field s;
        while (session.next(s))
          if (s.number == kSessionLogStatus && s.type == kVarint && s.integer == kSessionLogStart) session_start = true;
        if (session.malformed) malformed("its SessionLog runs past its end");
      }
    }
    if (event.malformed) malformed("a field runs past the end of the record");
    if (index == 0 && out.file_version.empty())
      throw Error(at(offset) + ": the first record has no file_version: not a TensorBoard event file");
    for (auto& [tag, value] : values) out.scalars.push_back({wall_time, step, std::move(tag), value});
    if (session_start) out.session_starts.push_back(step);
    offset += 16 + length;
  }
  return out;
}

}  // namespace neox
