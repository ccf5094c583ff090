// SPDX-License-Identifier: Apache-2.0
// TensorBoard event files (core/src/train/event_file.cpp, written by the run log):
// CRC32C against the standard vectors, the writer read back by our reader,
// corrupt and truncated files refused with the byte offset, a real training
// run's event files against its metrics.jsonl (fresh and resumed), and the
// same files read by the `tensorboard` package itself (tests/support/tensorboard_read.py).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "../../core/src/train/event_file.h"
#include "neox/train/config.h"
#include "neox/train/trainer.h"
#include "test_support.h"

namespace fs = std::filesystem;

namespace {

using neox::test::read_text;

std::string temp_dir(const std::string& name) { return neox::test::temp_dir("neox_tensorboard", name); }

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

// The event files of a directory, in name order (TensorBoard's reading order).
std::vector<std::string> event_files(const std::string& dir) {
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().find("tfevents") != std::string::npos) files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  return files;
}

// The byte offsets at which a file's records start, from the framing alone.
std::vector<std::uint64_t> record_offsets(const std::string& bytes) {
  std::vector<std::uint64_t> offsets;
  for (std::uint64_t at = 0; at + 12 <= bytes.size();) {
    std::uint64_t length = 0;
    for (int i = 0; i < 8; ++i)
      length |= static_cast<std::uint64_t>(static_cast<unsigned char>(bytes[at + i])) << (8 * i);
    offsets.push_back(at);
    at += 16 + length;
  }
  return offsets;
}

TEST(TensorBoard, Crc32cMatchesTheStandardVectors) {
  const std::string digits = "123456789";
  EXPECT_EQ(neox::crc32c(digits.data(), digits.size()), 0xE3069283u);  // the CRC-32C check value
  // RFC 3720 (iSCSI), appendix B.4.
  const std::string zeros(32, '\0'), ones(32, '\xff');
  std::string ascending(32, '\0');
  for (int i = 0; i < 32; ++i) ascending[i] = static_cast<char>(i);
  EXPECT_EQ(neox::crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);
  EXPECT_EQ(neox::crc32c(ones.data(), ones.size()), 0x62A8AB43u);
  EXPECT_EQ(neox::crc32c(ascending.data(), ascending.size()), 0x46DD794Eu);
  // TFRecord's mask: rotate right by 15, add 0xa282ead8 (mod 2^32).
  const std::uint32_t c = 0xE3069283u;
  EXPECT_EQ(neox::masked_crc32c(digits.data(), digits.size()),
            static_cast<std::uint32_t>(((c >> 15) | (c << 17)) + 0xa282ead8u));
}

// The records' data byte for byte, as event.proto and summary.proto encode
// them (field numbers: Event wall_time 1, step 2, file_version 3, summary 5,
// session_log 7; Summary value 1; Value tag 1, simple_value 2; SessionLog
// status 1, START = 1).
TEST(TensorBoard, RecordsAreTheEventProtoEncoding) {
  const std::string dir = temp_dir("encoding");
  std::string path;
  {
    neox::EventFileWriter w(dir);
    path = w.path();
    w.add_session_start(5, 1.0);
    w.add_scalar("a", 1.5, 3, 2.0);
  }
  const std::string bytes = read_text(path);
  const auto offsets = record_offsets(bytes);
  ASSERT_EQ(offsets.size(), 3u);
  auto data = [&](std::size_t i) {
    const std::uint64_t end = i + 1 < offsets.size() ? offsets[i + 1] : bytes.size();
    return bytes.substr(offsets[i] + 12, end - offsets[i] - 16);
  };
  using namespace std::string_literals;
  // Key 0x09: field 1 (wall_time), 64-bit; then the double, little-endian.
  const std::string version = data(0);
  ASSERT_EQ(version.size(), 9u + 15u);
  EXPECT_EQ(version[0], '\x09');
  EXPECT_EQ(version.substr(9), "\x1a\x0d"s + "brain.Event:2");  // field 3, length-delimited, 13 bytes
  EXPECT_EQ(data(1),
            "\x09\x00\x00\x00\x00\x00\x00\xf0\x3f"s  // wall_time 1.0
            "\x10\x05"s                              // step 5 (field 2, varint)
            "\x3a\x02\x08\x01"s);                    // session_log {status START}
  EXPECT_EQ(data(2),
            "\x09\x00\x00\x00\x00\x00\x00\x00\x40"s  // wall_time 2.0
            "\x10\x03"s                              // step 3
            "\x2a\x0a"s                              // summary, 10 bytes
            "\x0a\x08"s                              //   value, 8 bytes
            "\x0a\x01"
            "a"s                       //     tag "a"
            "\x15\x00\x00\xc0\x3f"s);  //     simple_value 1.5f (field 2, 32-bit)
  fs::remove_all(dir);
}

TEST(TensorBoard, WriterRoundTripsThroughTheReader) {
  const std::string dir = temp_dir("roundtrip");
  struct In {
    std::string tag;
    double value;
    std::int64_t step;
    double wall_time;
  };
  const std::vector<In> in = {
      {"train/lm_loss", 6.90625, 1, 1700000000.25},
      {"train/learning_rate", 0.1, 1, 1700000000.5},  // not a float: stored rounded to one
      {"train/grad_norm", -1.5e-7, 2, 1700000001.0},
      {"runtime/tokens_per_sec", 3.0e30, 1LL << 40, 1700000002.125},
      {"validation/lm_loss_ppl", 0.0, 0, 0.0},
      {std::string(300, 'x'), 42.0, 7, 1.0},  // a tag longer than one varint byte of length
  };
  std::string path;
  {
    neox::EventFileWriter w(dir);
    path = w.path();
    w.add_session_start(1, 1699999999.0);
    for (const auto& s : in) w.add_scalar(s.tag, s.value, s.step, s.wall_time);
    w.flush();
  }
  const std::string name = fs::path(path).filename().string();
  EXPECT_EQ(name.rfind("events.out.tfevents.", 0), 0u) << name;
  EXPECT_EQ(fs::path(path).parent_path(), fs::path(dir));

  neox::EventFileContents got = neox::read_event_file(path);
  EXPECT_EQ(got.file_version, "brain.Event:2");
  EXPECT_EQ(got.session_starts, std::vector<std::int64_t>{1});
  ASSERT_EQ(got.scalars.size(), in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    EXPECT_EQ(got.scalars[i].tag, in[i].tag);
    EXPECT_EQ(got.scalars[i].step, in[i].step) << in[i].tag;
    EXPECT_EQ(got.scalars[i].value, static_cast<float>(in[i].value)) << in[i].tag;  // exact
    EXPECT_EQ(got.scalars[i].wall_time, in[i].wall_time) << in[i].tag;
  }

  // A second writer in the same directory (a resumed run, the same second):
  // a new file, and the first one untouched.
  const std::string before = read_text(path);
  {
    neox::EventFileWriter again(dir);
    EXPECT_NE(again.path(), path);
    again.add_scalar("train/lm_loss", 1.0, 9);
    again.flush();
  }
  EXPECT_EQ(read_text(path), before);
  EXPECT_EQ(event_files(dir).size(), 2u);
  fs::remove_all(dir);
}

TEST(TensorBoard, ReaderRefusesCorruptAndTruncatedFilesNamingTheOffset) {
  const std::string dir = temp_dir("corrupt");
  std::string path;
  {
    neox::EventFileWriter w(dir);
    path = w.path();
    for (int step = 1; step <= 3; ++step) w.add_scalar("train/lm_loss", 7.0 - step, step, 1700000000.0 + step);
    w.flush();
  }
  const std::string good = read_text(path);
  const std::vector<std::uint64_t> offsets = record_offsets(good);
  ASSERT_EQ(offsets.size(), 4u);  // the file version and three scalars
  ASSERT_EQ(neox::read_event_file(path).scalars.size(), 3u);
  const std::string bad = dir + "/events.out.tfevents.bad";
  auto is_truncated = [&] {
    try {
      neox::read_event_file(bad);
    } catch (const neox::TruncatedEventFile&) {
      return true;
    } catch (const neox::Error&) {
    }
    return false;
  };

  // A flipped bit in the data of the third record (the second scalar).
  std::string bytes = good;
  bytes[offsets[2] + 12 + 3] ^= 0x01;
  write_bytes(bad, bytes);
  std::string msg = neox::test::error_of([&] { neox::read_event_file(bad); });
  EXPECT_NE(msg.find(bad), std::string::npos) << msg;
  EXPECT_NE(msg.find("byte offset " + std::to_string(offsets[2])), std::string::npos) << msg;
  EXPECT_NE(msg.find("CRC32C of the"), std::string::npos) << msg;
  EXPECT_FALSE(is_truncated()) << "a bad CRC is corruption, not truncation";

  // A flipped bit in a length.
  bytes = good;
  bytes[offsets[1]] ^= 0x10;
  write_bytes(bad, bytes);
  msg = neox::test::error_of([&] { neox::read_event_file(bad); });
  EXPECT_NE(msg.find("byte offset " + std::to_string(offsets[1]) + ": the CRC32C of the length"), std::string::npos)
      << msg;

  // A flipped bit in a data CRC itself.
  bytes = good;
  bytes[good.size() - 1] ^= 0x80;
  write_bytes(bad, bytes);
  msg = neox::test::error_of([&] { neox::read_event_file(bad); });
  EXPECT_NE(msg.find("byte offset " + std::to_string(offsets[3])), std::string::npos) << msg;

  // Truncated, as a crash while writing the last record leaves it: in its
  // data CRC, its data, and its header. Reported as truncation, at the
  // record's start.
  for (std::uint64_t cut :
       {good.size() - 1, static_cast<std::size_t>(offsets[3] + 14), static_cast<std::size_t>(offsets[3] + 5)}) {
    write_bytes(bad, good.substr(0, cut));
    msg = neox::test::error_of([&] { neox::read_event_file(bad); });
    EXPECT_NE(msg.find(bad), std::string::npos) << msg;
    EXPECT_NE(msg.find("byte offset " + std::to_string(offsets[3]) + ": truncated"), std::string::npos)
        << "cut at " << cut << ": " << msg;
    EXPECT_TRUE(is_truncated()) << "cut at " << cut;
    try {
      neox::read_event_file(bad);
    } catch (const neox::TruncatedEventFile& e) {
      EXPECT_EQ(e.offset(), offsets[3]);
    }
  }
  write_bytes(bad, "");
  EXPECT_TRUE(is_truncated()) << "an empty file";
  // Not an event file: a well-framed first record (empty data) without a
  // file_version.
  std::string empty_record(8, '\0');
  auto put_u32 = [](std::string& s, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) s += static_cast<char>((v >> (8 * i)) & 0xff);
  };
  put_u32(empty_record, neox::masked_crc32c(empty_record.data(), 8));
  put_u32(empty_record, neox::masked_crc32c("", 0));
  write_bytes(bad, empty_record);
  msg = neox::test::error_of([&] { neox::read_event_file(bad); });
  EXPECT_NE(msg.find("byte offset 0: the first record has no file_version"), std::string::npos) << msg;
  fs::remove_all(dir);
}

// --- A real training run ---------------------------------------------------

// GPT-NeoX's test corpus, the model of test_trainer.cpp; fp16 with a static
// loss scale (so that train/loss_scale is logged and no step overflows) and a
// peak_tflops (so that runtime/mfu is).
std::string run_config(const std::string& dir) {
  return R"([plugins]
data = "mmap"
[plugins.options.mmap]
data_path = ")" +
         neox::test::testdata_dir() + R"(/megatron/corpus_a"
split = "80,15,5"
[model]
num_layers = 2
hidden_size = 32
num_attention_heads = 2
vocab_size = 1000
seq_length = 16
max_position_embeddings = 16
rotary_pct = 0.5
[optimizer]
lr = 1e-3
warmup = 0.25
lr_decay_style = "cosine"
[training]
train_micro_batch_size_per_gpu = 2
train_iters = 6
eval_interval = 3
eval_iters = 1
log_interval = 2
checkpoint_factor = 4
precision = "fp16"
loss_scale = 128.0
peak_tflops = 1.0
run_name = "r"
log_dir = ")" +
         dir + R"(/runs"
save = ")" +
         dir + R"(/ckpt"
)";
}

// One number of metrics.jsonl as TensorBoard shows it: the tag (GPT-NeoX's
// names), the step, the value.
struct Scalar {
  std::string tag;
  std::int64_t step;
  double value;
};

// metrics.jsonl's numbers, in file order, with the tags the event file must
// give them.
std::vector<Scalar> metrics_as_scalars(const std::string& run_dir) {
  static const std::vector<std::pair<std::string, std::string>> train = {
      {"loss", "train/lm_loss"},        {"lr", "train/learning_rate"},
      {"grad_norm", "train/grad_norm"}, {"tokens_per_sec", "runtime/tokens_per_sec"},
      {"mfu", "runtime/mfu"},           {"loss_scale", "train/loss_scale"}};
  std::vector<Scalar> out;
  std::istringstream lines(read_text(run_dir + "/metrics.jsonl"));
  for (std::string line; std::getline(lines, line);) {
    const auto j = nlohmann::json::parse(line);
    const std::int64_t step = j.at("step").get<std::int64_t>();
    if (j.contains("split")) {
      const std::string split = j.at("split").get<std::string>();
      const std::string chart = split == "valid" ? "validation" : split;
      out.push_back({chart + "/lm_loss", step, j.at("loss").get<double>()});
      out.push_back({chart + "/lm_loss_ppl", step, j.at("perplexity").get<double>()});
    } else {
      for (const auto& [key, tag] : train) {
        EXPECT_TRUE(j.contains(key)) << key << " missing in " << line;
        if (j.contains(key)) out.push_back({tag, step, j.at(key).get<double>()});
      }
    }
  }
  return out;
}

// float against the double it was made from: relative 1e-6 (a float keeps
// 24 bits, a relative error of at most 6e-8).
bool same_value(double from_metrics, double from_events) {
  return std::abs(from_events - from_metrics) <= 1e-6 * std::abs(from_metrics);
}

// `got` holds exactly the scalars of `expected`: the same (tag, step) pairs,
// as many times each, with the same values (same_value).
void expect_scalars_match(const std::vector<Scalar>& expected, const std::vector<neox::ScalarEvent>& got) {
  ASSERT_EQ(got.size(), expected.size());
  std::multimap<std::pair<std::string, std::int64_t>, double> want;
  for (const auto& s : expected) want.insert({{s.tag, s.step}, s.value});
  for (const auto& e : got) {
    // A (tag, step) logged twice (a resumed run) may hold two values (the
    // throughput): take the one that matches.
    auto [lo, hi] = want.equal_range({e.tag, e.step});
    ASSERT_NE(lo, hi) << "an event " << e.tag << " at step " << e.step << " that metrics.jsonl does not have";
    auto it = std::find_if(lo, hi, [&](const auto& w) { return same_value(w.second, e.value); });
    EXPECT_NE(it, hi) << e.tag << " at step " << e.step << ": metrics.jsonl " << lo->second << ", event file "
                      << e.value;
    want.erase(it == hi ? lo : it);
  }
  EXPECT_TRUE(want.empty());
}

std::vector<neox::ScalarEvent> all_scalars(const std::vector<std::string>& files) {
  std::vector<neox::ScalarEvent> out;
  for (const auto& f : files) {
    auto c = neox::read_event_file(f);
    out.insert(out.end(), c.scalars.begin(), c.scalars.end());
  }
  return out;
}

// Run 1 trains steps 1-6 (checkpoints at 4 and 6); run 2 resumes in the same
// run directory from the step-4 checkpoint and trains 5-6 again, so that
// steps 5 and 6 are logged twice, as after a crash.
struct TwoRuns {
  std::string run_dir;
  std::vector<Scalar> first_metrics;  // metrics.jsonl after run 1
  std::string first_file, first_file_bytes;
};

TwoRuns train_twice(const std::string& dir) {
  TwoRuns t;
  neox::TrainResult a = neox::train(neox::parse_config(run_config(dir), dir + "/a.toml"));
  t.run_dir = a.run_dir;
  t.first_metrics = metrics_as_scalars(t.run_dir);
  const auto files = event_files(t.run_dir);
  EXPECT_EQ(files.size(), 1u);
  if (!files.empty()) {
    t.first_file = files[0];
    t.first_file_bytes = read_text(files[0]);
  }
  neox::train(neox::parse_config(run_config(dir), dir + "/b.toml", {"training.load=" + dir + "/ckpt/global_step4"}));
  return t;
}

TEST(TensorBoard, TrainingRunEventFilesHoldMetricsJsonlsValues) {
  const std::string dir = temp_dir("train");
  const TwoRuns t = train_twice(dir);
  ASSERT_FALSE(t.first_file.empty());

  // Run 1: one file, holding every number of metrics.jsonl under its tag.
  const auto first = neox::read_event_file(t.first_file);
  EXPECT_EQ(first.file_version, "brain.Event:2");
  EXPECT_EQ(first.session_starts, std::vector<std::int64_t>{1});
  expect_scalars_match(t.first_metrics, first.scalars);
  std::set<std::string> tags;
  for (const auto& s : first.scalars) tags.insert(s.tag);
  EXPECT_EQ(tags, (std::set<std::string>{"train/lm_loss", "train/learning_rate", "train/grad_norm", "train/loss_scale",
                                         "runtime/tokens_per_sec", "runtime/mfu", "validation/lm_loss",
                                         "validation/lm_loss_ppl", "test/lm_loss", "test/lm_loss_ppl"}));
  std::vector<std::int64_t> loss_steps;
  for (const auto& s : first.scalars)
    if (s.tag == "train/lm_loss") loss_steps.push_back(s.step);
  EXPECT_EQ(loss_steps, (std::vector<std::int64_t>{2, 4, 6})) << "every log_interval (2) steps";

  // Run 2 (resumed): a second file, starting a session at step 5; the first
  // file exactly as run 1 left it; both together hold all of metrics.jsonl.
  const auto files = event_files(t.run_dir);
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(files[0], t.first_file) << "the resumed run's file must sort after the first";
  EXPECT_EQ(read_text(files[0]), t.first_file_bytes) << "the resumed run rewrote the first event file";
  const auto second = neox::read_event_file(files[1]);
  EXPECT_EQ(second.session_starts, std::vector<std::int64_t>{5});
  expect_scalars_match(metrics_as_scalars(t.run_dir), all_scalars(files));

  // training.tensorboard = false: no event file.
  neox::TrainResult off = neox::train(neox::parse_config(
      run_config(dir), dir + "/c.toml",
      {"training.tensorboard=false", "training.run_name=off", "training.train_iters=2", "training.save="}));
  EXPECT_TRUE(fs::exists(off.run_dir + "/metrics.jsonl"));
  EXPECT_TRUE(event_files(off.run_dir).empty());
  fs::remove_all(dir);
}

// The scalars `tensorboard_read.py` prints for `path`; skips the test when
// the tensorboard package is not installed.
struct PythonRead {
  bool skipped = false;
  std::string why;
  std::vector<neox::ScalarEvent> scalars;
};

PythonRead read_with_tensorboard(const std::string& path) {
  PythonRead r;
  const std::string python = "/usr/bin/python3";
  if (!fs::exists(python)) {
    r.skipped = true;
    r.why = python + " is missing";
    return r;
  }
  const auto out =
      neox::test::run_command(python + " " + neox::test::source_dir() + "/tests/support/tensorboard_read.py " + path);
  if (out.status == 3) {
    r.skipped = true;
    r.why = out.output;
    return r;
  }
  EXPECT_EQ(out.status, 0) << out.output;
  std::istringstream lines(out.output);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] != '{') continue;  // TensorBoard's own warnings
    const auto j = nlohmann::json::parse(line);
    r.scalars.push_back({j.at("wall_time").get<double>(), j.at("step").get<std::int64_t>(),
                         j.at("tag").get<std::string>(), static_cast<float>(j.at("value").get<double>())});
  }
  return r;
}

TEST(TensorBoard, TheTensorboardPackageReadsTheSameScalars) {
  if (!fs::exists("/usr/bin/python3")) GTEST_SKIP() << "/usr/bin/python3 is missing";
  const std::string dir = temp_dir("python");
  const TwoRuns t = train_twice(dir);

  PythonRead py = read_with_tensorboard(t.run_dir);
  if (py.skipped) {
    fs::remove_all(dir);
    GTEST_SKIP() << "the tensorboard Python package is not installed for /usr/bin/python3 "
                    "(/usr/bin/python3 -m pip install tensorboard): "
                 << py.why;
  }
  // TensorBoard's view of the directory: both files, with the SessionLog
  // START of run 2 discarding run 1's steps >= 5. That is metrics.jsonl with
  // each (tag, step) taken from its last line.
  std::map<std::pair<std::string, std::int64_t>, double> last;
  for (const auto& s : metrics_as_scalars(t.run_dir)) last[{s.tag, s.step}] = s.value;
  std::vector<Scalar> expected;
  for (const auto& [key, value] : last) expected.push_back({key.first, key.second, value});
  expect_scalars_match(expected, py.scalars);
  // ... and the values and wall times exactly as our reader reads them from
  // run 2's file (steps 5-6) and run 1's (steps up to 4).
  std::map<std::pair<std::string, std::int64_t>, neox::ScalarEvent> ours;
  for (const auto& e : all_scalars(event_files(t.run_dir))) ours[{e.tag, e.step}] = e;  // later files win
  for (const auto& e : py.scalars) {
    const auto& o = ours.at({e.tag, e.step});
    EXPECT_EQ(e.value, o.value) << e.tag << " at " << e.step;
    EXPECT_EQ(e.wall_time, o.wall_time) << e.tag << " at " << e.step;
  }

  // The check can fail: a copy of run 1's file with one flipped bit in the
  // data of a record in the middle. TensorBoard stops at the bad CRC (it
  // takes it for a record still being written), so it shows fewer scalars.
  const std::string broken_dir = dir + "/broken";
  fs::create_directories(broken_dir);
  std::string bytes = t.first_file_bytes;
  const auto offsets = record_offsets(bytes);
  ASSERT_GT(offsets.size(), 10u);
  bytes[offsets[offsets.size() / 2] + 14] ^= 0x01;
  write_bytes(broken_dir + "/" + fs::path(t.first_file).filename().string(), bytes);
  PythonRead broken = read_with_tensorboard(broken_dir);
  const std::size_t intact = neox::read_event_file(t.first_file).scalars.size();
  EXPECT_LT(broken.scalars.size(), intact) << "tensorboard read a file with a bad CRC as if it were intact";
  fs::remove_all(dir);
}

}  // namespace
