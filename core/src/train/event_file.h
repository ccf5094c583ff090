// SPDX-License-Identifier: Apache-2.0
// TensorBoard event files: a run's scalars as TensorFlow's Event protocol
// buffers (tensorflow/core/util/event.proto, summary.proto) in TFRecord
// framing, which `tensorboard --logdir` reads, and a reader for them (for the
// tests, and to check a file by hand). Internal to the core, like run_log.h;
// NEOX_API marks what tests/unit/test_tensorboard.cpp calls.
//
// A file is a sequence of records, each
//   uint64 length (little-endian) | uint32 masked CRC32C of those 8 bytes |
//   `length` bytes of data | uint32 masked CRC32C of the data,
// the first holding Event{wall_time, file_version "brain.Event:2"}, the rest
// one Event each: Event{wall_time, step, summary{value{tag, simple_value}}}
// for a scalar, Event{wall_time, step, session_log{status START}} where a run
// (re)starts.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "neox/error.h"
#include "neox/export.h"
#include "neox/io/crc32c.h"  // crc32c()

namespace neox {

// TFRecord's masked form of the CRC32C: rotated right by 15 bits plus
// 0xa282ead8, so that a CRC of data holding CRCs is not itself trivial.
NEOX_API std::uint32_t masked_crc32c(const void* data, std::size_t size);

// Writes one event file, rank 0's, in `dir`. The name is TensorBoard's own,
// events.out.tfevents.<unix seconds>.<hostname> (TensorBoard reads only files
// whose name contains "tfevents"); when a file of that name exists (a run
// resumed within the same second) ".1", ".2", ... is appended: an existing
// file is never opened for writing, so a resumed run adds a file and the
// earlier ones stay as they were. Records are buffered until flush().
class NEOX_API EventFileWriter {
 public:
  // Creates the file and writes its first record (the file version).
  explicit EventFileWriter(const std::string& dir);
  ~EventFileWriter();
  EventFileWriter(const EventFileWriter&) = delete;
  EventFileWriter& operator=(const EventFileWriter&) = delete;

  const std::string& path() const { return path_; }
  // One scalar at `step`, stored as a float (TensorBoard's simple_value).
  // wall_time: seconds since the Unix epoch; < 0: now.
  void add_scalar(const std::string& tag, double value, std::int64_t step, double wall_time = -1.0);
  // SessionLog START at `step`: TensorBoard then discards the events of the
  // same directory's earlier files at steps >= `step` (logged by a run that
  // crashed after its last checkpoint, and now trained again).
  void add_session_start(std::int64_t step, double wall_time = -1.0);
  // Hands the buffered records to the operating system. Throws neox::Error
  // naming the file when a write fails (e.g. a full disk).
  void flush();

 private:
  void write_record(const std::string& data);

  std::string path_;
  struct Closer {
    void operator()(std::FILE* f) const;
  };
  std::unique_ptr<std::FILE, Closer> file_;
};

// One scalar of an event file, as TensorBoard shows it.
struct ScalarEvent {
  double wall_time = 0.0;
  std::int64_t step = 0;
  std::string tag;
  float value = 0.0f;
};

struct EventFileContents {
  std::string file_version;                  // "brain.Event:2"
  std::vector<ScalarEvent> scalars;          // in file order
  std::vector<std::int64_t> session_starts;  // steps of the SessionLog START events
};

// The file ends inside a record, as a crash while writing leaves it: every
// record before `offset` was read and checked.
class NEOX_API TruncatedEventFile : public Error {
 public:
  TruncatedEventFile(const std::string& what, std::uint64_t offset) : Error(what), offset_(offset) {}
  std::uint64_t offset() const { return offset_; }  // where the truncated record starts

 private:
  std::uint64_t offset_;
};

// Reads and checks a whole event file: the framing, both CRCs of every
// record, and the Event messages. Throws neox::Error naming the file and the
// record's byte offset for a bad CRC or a malformed message, and
// TruncatedEventFile when the last record is incomplete.
NEOX_API EventFileContents read_event_file(const std::string& path);

}  // namespace neox
