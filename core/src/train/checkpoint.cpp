// SPDX-License-Identifier: Apache-2.0
// Training checkpoints (checkpoint.h): atomic save, resolve with fallback,
// strict load.
//
// A save writes every file into SAVE/.tmp-global_step<N>-<pid>/, syncs each
// file and the directory, and only then renames the directory into place
// (exchanging it atomically with an existing global_step<N> where the file
// system supports renameat2(RENAME_EXCHANGE)), then replaces SAVE/latest via
// latest.tmp + rename, and only then prunes. A reader therefore sees either
// the old or the new checkpoint, never a half-written one; a crash leaves at
// most a .tmp-* directory, which load/resolve ignore and the next save
// removes.
//
// state.json records the size and CRC32C of every other file, and resolve
// verifies them with the facts that must agree (iteration, data positions)
// and the finiteness of every saved value; a save directory falls back past
// a checkpoint that fails. Writers hold an flock on SAVE/.lock.
#include "neox/train/checkpoint.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "neox/arena.h"
#include "neox/backend.h"
#include "neox/communicator.h"
#include "neox/error.h"
#include "neox/io/crc32c.h"
#include "neox/io/hf.h"
#include "neox/io/safetensors.h"
#include "neox/model/gpt_neox.h"
#include "neox/optimizer.h"

#ifndef NEOX_VERSION
#define NEOX_VERSION "unknown"
#endif

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace neox {

namespace {

constexpr int kFormatVersion = 1;
constexpr const char* kFormatName = "neox-checkpoint";
constexpr const char* kModelFile = "model.safetensors";
constexpr const char* kOptimizerFile = "optimizer.safetensors";
constexpr const char* kStateFile = "state.json";
constexpr const char* kConfigFile = "config.toml";
constexpr const char* kLatest = "latest";
constexpr const char* kStepPrefix = "global_step";
constexpr const char* kTmpPrefix = ".tmp-";
constexpr const char* kRangesTensor = "arena_ranges";  // in optimizer shards
constexpr const char* kLockFile = ".lock";

std::string shard_file(std::int64_t rank) { return "optimizer.rank" + std::to_string(rank) + ".safetensors"; }

std::string errno_message(int err) { return std::strerror(err); }

// Syncs a file or directory. Directories on file systems that cannot sync
// them (EINVAL) are skipped: there is nothing more to do there.
void sync_path(const fs::path& p, bool directory) {
  int fd = ::open(p.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    throw Error(p.string() + ": cannot open to sync: " + errno_message(err));
  }
  if (::fsync(fd) != 0) {
    int err = errno;
    ::close(fd);
    if (directory && (err == EINVAL || err == EROFS)) return;
    throw Error(p.string() + ": cannot sync: " + errno_message(err));
  }
  ::close(fd);
}

// Writes `text` to `path` (truncating) and syncs it.
void write_file_synced(const fs::path& path, const std::string& text) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    int err = errno;
    throw Error(path.string() + ": cannot create: " + errno_message(err));
  }
  const char* p = text.data();
  std::size_t left = text.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      throw Error(path.string() + ": cannot write: " + errno_message(err));
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) {
    int err = errno;
    ::close(fd);
    throw Error(path.string() + ": cannot sync: " + errno_message(err));
  }
  if (::close(fd) != 0) {
    int err = errno;
    throw Error(path.string() + ": cannot close: " + errno_message(err));
  }
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path.string() + ": cannot open");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw Error(path.string() + ": cannot read");
  return ss.str();
}

// N for a directory name "global_step<N>" (decimal digits only), else nothing.
std::optional<std::int64_t> step_of(const std::string& name) {
  const std::string prefix = kStepPrefix;
  if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) return std::nullopt;
  const std::string digits = name.substr(prefix.size());
  if (digits.size() > 18 || !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  return std::stoll(digits);
}

// global_step* directories of a save directory, newest (highest step) first.
std::vector<std::pair<std::int64_t, fs::path>> list_steps(const fs::path& root) {
  std::vector<std::pair<std::int64_t, fs::path>> out;
  std::error_code ec;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    auto step = step_of(it->path().filename().string());
    if (step && it->is_directory(ec)) out.emplace_back(*step, it->path());
  }
  if (ec) throw Error(root.string() + ": cannot list the save directory: " + ec.message());
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  return out;
}

// --- checksums and values ---------------------------------------------------

// What state.json records of each file of a checkpoint.
struct FileFact {
  std::int64_t bytes = 0;
  std::uint32_t crc = 0;
};

std::string crc_hex(std::uint32_t crc) {
  char buf[9];
  std::snprintf(buf, sizeof buf, "%08x", crc);
  return buf;
}

// Size and CRC32C of a file, read in chunks (from the page cache, right after
// a save wrote it).
FileFact digest_file(const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    throw Error(path.string() + ": cannot open: " + errno_message(err));
  }
  std::vector<char> buf(std::size_t{4} << 20);
  FileFact fact;
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      throw Error(path.string() + ": cannot read: " + errno_message(err));
    }
    if (n == 0) break;
    fact.crc = crc32c_extend(fact.crc, buf.data(), static_cast<std::size_t>(n));
    fact.bytes += n;
  }
  ::close(fd);
  return fact;
}

// The index of the first element of `n` whose bits, under `exponent`, are all
// ones (an IEEE inf or NaN), or -1. Scans in blocks, so that the common case
// (none) runs as a vectorised OR.
template <typename Bits>
std::int64_t first_nonfinite(const void* data, std::int64_t n, Bits exponent) {
  const Bits* p = static_cast<const Bits*>(data);
  constexpr std::int64_t kBlock = 4096;
  for (std::int64_t start = 0; start < n; start += kBlock) {
    const std::int64_t end = std::min(n, start + kBlock);
    bool any = false;
    for (std::int64_t i = start; i < end; ++i) any |= (p[i] & exponent) == exponent;
    if (any)
      for (std::int64_t i = start; i < end; ++i)
        if ((p[i] & exponent) == exponent) return i;
  }
  return -1;
}

// "" when every float tensor of the safetensors file holds only finite
// values, else which one does not (naming the file as `shown`).
std::string nonfinite_reason(const fs::path& path, const std::string& shown) {
  const SafeTensorsFile file = SafeTensorsFile::open(path.string());
  for (const SafeTensorInfo& info : file.tensors()) {
    const std::int64_t n = neox::numel(info.shape);
    if (n == 0) continue;
    std::int64_t bad = -1;
    const Tensor view = file.view(info.name);
    switch (info.dtype) {
      case DType::f32:
        bad = first_nonfinite<std::uint32_t>(view.data(), n, 0x7f800000u);
        break;
      case DType::f64:
        bad = first_nonfinite<std::uint64_t>(view.data(), n, 0x7ff0000000000000ull);
        break;
      case DType::f16:
        bad = first_nonfinite<std::uint16_t>(view.data(), n, 0x7c00u);
        break;
      case DType::bf16:
        bad = first_nonfinite<std::uint16_t>(view.data(), n, 0x7f80u);
        break;
      default:
        continue;  // integers (arena_ranges)
    }
    if (bad >= 0) {
      float value = 0.0f;
      convert_host(&value, DType::f32, static_cast<const char*>(view.data()) + bad * dtype_size(info.dtype), info.dtype,
                   1);
      return shown + ": tensor '" + info.name + "' holds a non-finite value (" +
             (std::isnan(value) ? "nan"
              : value > 0       ? "inf"
                                : "-inf") +
             ") at element " + std::to_string(bad);
    }
  }
  return "";
}

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "?";
  return buf;
}

// --- base64 (rng_state that is not valid UTF-8 is stored this way) ---------

constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string base64_encode(const std::string& in) {
  std::string out;
  std::size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    unsigned v = (static_cast<unsigned char>(in[i]) << 16) | (static_cast<unsigned char>(in[i + 1]) << 8) |
                 static_cast<unsigned char>(in[i + 2]);
    for (int s = 18; s >= 0; s -= 6) out += kB64[(v >> s) & 63];
  }
  if (i < in.size()) {
    unsigned v = static_cast<unsigned char>(in[i]) << 16;
    if (i + 1 < in.size()) v |= static_cast<unsigned char>(in[i + 1]) << 8;
    out += kB64[(v >> 18) & 63];
    out += kB64[(v >> 12) & 63];
    out += i + 1 < in.size() ? kB64[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::optional<std::string> base64_decode(const std::string& in) {
  if (in.size() % 4 != 0) return std::nullopt;
  std::string out;
  for (std::size_t i = 0; i < in.size(); i += 4) {
    unsigned v = 0;
    int pad = 0;
    for (int k = 0; k < 4; ++k) {
      char c = in[i + k];
      int d;
      if (c == '=' && i + 4 == in.size() && k >= 2) {
        d = 0;
        ++pad;
      } else {
        if (pad) return std::nullopt;
        const char* pos = std::strchr(kB64, c);
        if (!pos || c == '\0') return std::nullopt;
        d = static_cast<int>(pos - kB64);
      }
      v = (v << 6) | static_cast<unsigned>(d);
    }
    out += static_cast<char>((v >> 16) & 255);
    if (pad < 2) out += static_cast<char>((v >> 8) & 255);
    if (pad < 1) out += static_cast<char>(v & 255);
  }
  return out;
}

// --- state.json --------------------------------------------------------------

std::string state_json(const CheckpointState& state, const Optimizer* optimizer, int shards,
                       const std::map<std::string, FileFact>& files) {
  json j = json::object();
  j["format"] = kFormatName;
  j["format_version"] = kFormatVersion;
  j["neox_version"] = NEOX_VERSION;
  j["iteration"] = state.iteration;
  j["data_positions"] = json::object();
  for (const auto& [split, pos] : state.data_positions) {
    try {
      (void)json(split).dump();
    } catch (const json::exception&) {
      throw Error("save_checkpoint: data position name is not valid UTF-8");
    }
    if (pos < 0)
      throw Error("save_checkpoint: data position '" + split + "' is negative (" + std::to_string(pos) + ")");
    j["data_positions"][split] = pos;
  }
  try {
    (void)json(state.rng_state).dump();  // throws for invalid UTF-8
    j["rng_state"] = state.rng_state;
  } catch (const json::exception&) {
    j["rng_state_base64"] = base64_encode(state.rng_state);
  }
  j["optimizer"] = optimizer ? json(optimizer->name()) : json(nullptr);
  if (optimizer) j["optimizer_state"] = optimizer->state_kind();
  if (shards > 0) j["optimizer_shards"] = shards;
  if (!state.trainer_values.empty()) {
    j["trainer"] = json::object();
    for (const auto& [key, value] : state.trainer_values) {
      if (!std::isfinite(value)) throw Error("save_checkpoint: trainer value '" + key + "' is not finite");
      j["trainer"][key] = value;
    }
  }
  j["files"] = json::object();
  for (const auto& [name, fact] : files) j["files"][name] = {{"bytes", fact.bytes}, {"crc32c", crc_hex(fact.crc)}};
  return j.dump(2) + "\n";
}

std::string read_state_text(const fs::path& file) {
  try {
    return read_file(file);
  } catch (const Error& e) {
    throw Error(std::string(e.what()) + " (incomplete checkpoint)");
  }
}

// A file name recorded in state.json's "files": one entry of the directory.
bool plain_file_name(const std::string& name) {
  return !name.empty() && name[0] != '.' && name.find('/') == std::string::npos && name != kStateFile;
}

// Parses and checks state.json (its `text`); throws naming the file.
json parse_state_json(const fs::path& file, const std::string& text) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw Error(file.string() + ": not valid JSON (incomplete or corrupted checkpoint): " + e.what());
  }
  auto bad = [&](const std::string& what) {
    throw Error(file.string() + ": " + what + " (incomplete or corrupted checkpoint)");
  };
  if (!j.is_object()) bad("expected a JSON object");
  if (!j.contains("format_version") || !j["format_version"].is_number_integer())
    bad("missing integer 'format_version'");
  const auto version = j["format_version"].get<std::int64_t>();
  if (version > kFormatVersion)
    throw Error(file.string() + ": checkpoint format version " + std::to_string(version) +
                " was written by a newer neox (" + j.value("neox_version", std::string("?")) +
                "); this build reads up to version " + std::to_string(kFormatVersion));
  if (!j.contains("iteration") || !j["iteration"].is_number_integer()) bad("missing integer 'iteration'");
  if (j["iteration"].get<std::int64_t>() < 0) bad("'iteration' is negative");
  if (!j.contains("data_positions")) bad("'data_positions' is missing");
  if (!j["data_positions"].is_object()) bad("'data_positions' must be an object");
  for (auto& [k, v] : j["data_positions"].items()) {
    if (!v.is_number_integer()) bad("data_positions['" + k + "'] must be an integer");
    if (v.get<std::int64_t>() < 0) bad("data_positions['" + k + "'] is negative (" + v.dump() + ")");
  }
  if (j.contains("rng_state") && !j["rng_state"].is_string()) bad("'rng_state' must be a string");
  if (j.contains("rng_state_base64") &&
      (!j["rng_state_base64"].is_string() || !base64_decode(j["rng_state_base64"].get<std::string>())))
    bad("'rng_state_base64' must be a base64 string");
  if (j.contains("optimizer") && !j["optimizer"].is_null() && !j["optimizer"].is_string())
    bad("'optimizer' must be a string or null");
  if (j.contains("optimizer_state") && !j["optimizer_state"].is_string()) bad("'optimizer_state' must be a string");
  if (j.contains("optimizer_shards") &&
      (!j["optimizer_shards"].is_number_integer() || j["optimizer_shards"].get<std::int64_t>() < 1 ||
       j["optimizer_shards"].get<std::int64_t>() > 1'000'000))
    bad("'optimizer_shards' must be a positive integer");
  if (j.contains("trainer")) {
    if (!j["trainer"].is_object()) bad("'trainer' must be an object");
    for (auto& [k, v] : j["trainer"].items())
      if (!v.is_number()) bad("trainer['" + k + "'] must be a number");
  }
  if (j.contains("files")) {
    if (!j["files"].is_object()) bad("'files' must be an object");
    for (auto& [k, v] : j["files"].items()) {
      if (!plain_file_name(k)) bad("files: '" + k + "' is not a file name of the checkpoint directory");
      if (!v.is_object() || !v.contains("bytes") || !v["bytes"].is_number_integer() ||
          v["bytes"].get<std::int64_t>() < 0 || !v.contains("crc32c") || !v["crc32c"].is_string() ||
          v["crc32c"].get<std::string>().size() != 8 ||
          v["crc32c"].get<std::string>().find_first_not_of("0123456789abcdef") != std::string::npos)
        bad("files['" + k + "'] must be {\"bytes\": <size>, \"crc32c\": \"<8 hex digits>\"}");
    }
  }
  return j;
}

json read_state_json(const fs::path& file) { return parse_state_json(file, read_state_text(file)); }

bool has_optimizer_state(const json& state) { return state.contains("optimizer") && state["optimizer"].is_string(); }

// The optimizer files state.json promises: one whole file or one per rank.
std::vector<std::string> optimizer_files(const json& state) {
  if (!state.contains("optimizer_shards")) return {kOptimizerFile};
  std::vector<std::string> files;
  for (std::int64_t r = 0; r < state["optimizer_shards"].get<std::int64_t>(); ++r) files.push_back(shard_file(r));
  return files;
}

// The facts of state.json that must agree with the directory and with each
// other; "" or what does not.
std::string facts_reason(const fs::path& dir, const json& state) {
  const std::string file = (dir / kStateFile).string();
  const std::int64_t iteration = state["iteration"].get<std::int64_t>();
  if (auto step = step_of(dir.filename().string()); step && *step != iteration)
    return file + ": 'iteration' is " + std::to_string(iteration) + " but the directory is " + dir.filename().string() +
           " (a corrupted or copied checkpoint)";
  // A trainer's checkpoint: the training samples its steps consumed, from
  // where the current global batch size began.
  if (state.contains("trainer")) {
    const json& t = state["trainer"];
    if (t.contains("global_batch_size") && t.contains("batch_start_iteration") &&
        t.contains("batch_start_train_position")) {
      const json& positions = state["data_positions"];
      if (!positions.contains("train")) return file + ": data_positions['train'] is missing";
      const double batch = t["global_batch_size"].get<double>();
      const double start = t["batch_start_iteration"].get<double>();
      const double start_position = t["batch_start_train_position"].get<double>();
      const double train = static_cast<double>(positions["train"].get<std::int64_t>());
      if (!(batch >= 1) || !(start >= 0) || start > static_cast<double>(iteration) || !(start_position >= 0))
        return file + ": trainer values global_batch_size " + t["global_batch_size"].dump() +
               ", batch_start_iteration " + t["batch_start_iteration"].dump() + " and batch_start_train_position " +
               t["batch_start_train_position"].dump() + " do not fit iteration " + std::to_string(iteration);
      const double expected = start_position + (static_cast<double>(iteration) - start) * batch;
      if (train != expected)
        return file + ": data_positions['train'] is " + positions["train"].dump() + ", but " +
               std::to_string(iteration) + " steps (" + std::to_string(static_cast<std::int64_t>(batch)) +
               " samples each from step " + std::to_string(static_cast<std::int64_t>(start)) + ", after " +
               std::to_string(static_cast<std::int64_t>(start_position)) + ") consumed " +
               std::to_string(static_cast<std::int64_t>(expected));
    }
  }
  return "";
}

// The files a complete checkpoint must have besides state.json.
std::vector<std::string> required_files(const json& state) {
  std::vector<std::string> files = {kModelFile, kConfigFile};
  if (has_optimizer_state(state))
    for (const std::string& f : optimizer_files(state)) files.push_back(f);
  return files;
}

// Checksums of the files state.json lists, and the finiteness of the saved
// values: the checks that read every byte. "" or the first problem.
std::string contents_reason(const fs::path& dir, const json& state) {
  if (state.contains("files")) {
    const json& files = state["files"];
    for (const std::string& f : required_files(state))
      if (!files.contains(f))
        return (dir / kStateFile).string() + ": 'files' does not list " + f + " (a corrupted checkpoint)";
    for (auto& [name, fact] : files.items()) {
      const fs::path p = dir / name;
      std::error_code ec;
      if (!fs::is_regular_file(p, ec)) return p.string() + ": missing (state.json lists it)";
      const auto size = fs::file_size(p, ec);
      const std::int64_t want = fact["bytes"].get<std::int64_t>();
      if (ec) return p.string() + ": cannot stat: " + ec.message();
      if (static_cast<std::int64_t>(size) != want)
        return p.string() + ": " + std::to_string(size) + " bytes, but state.json recorded " + std::to_string(want) +
               " (the file was changed or truncated)";
      const FileFact got = digest_file(p);
      const std::string want_crc = fact["crc32c"].get<std::string>();
      if (crc_hex(got.crc) != want_crc)
        return p.string() + ": CRC32C " + crc_hex(got.crc) + ", but state.json recorded " + want_crc +
               " (the file is corrupted)";
    }
  }
  std::vector<std::string> tensors = {kModelFile};
  if (has_optimizer_state(state))
    for (const std::string& f : optimizer_files(state)) tensors.push_back(f);
  for (const std::string& f : tensors) {
    std::string reason = nonfinite_reason(dir / f, (dir / f).string());
    if (!reason.empty()) return reason;
  }
  return "";
}

// Verification reads every byte; a checkpoint is resolved, then loaded (and
// its optimizer state loaded) in one process, so the outcome is kept per
// directory while state.json and the files' identity, size and time stay
// the same.
struct VerifiedCheckpoint {
  std::string key;
  std::string reason;
};
std::mutex g_verified_mutex;
std::map<std::string, VerifiedCheckpoint> g_verified;

std::string identity_key(const fs::path& dir, const std::string& state_text, const json& state) {
  std::string key = state_text;
  std::vector<std::string> names = required_files(state);
  if (state.contains("files"))
    for (auto& [name, fact] : state["files"].items()) names.push_back(name);
  for (const std::string& name : names) {
    struct stat st {};
    if (::stat((dir / name).c_str(), &st) != 0) return "";  // missing: not cached
    key += "\n" + name + " " + std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino) + " " +
           std::to_string(st.st_size) + " " + std::to_string(st.st_mtim.tv_sec) + "." +
           std::to_string(st.st_mtim.tv_nsec);
  }
  return key;
}

// "" when `dir` holds a complete, verified checkpoint, else why not (naming
// the file).
std::string incomplete_reason(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return dir.string() + ": not a directory";
  for (const char* f : {kStateFile, kModelFile, kConfigFile})
    if (!fs::is_regular_file(dir / f, ec)) return (dir / f).string() + ": missing (incomplete checkpoint)";
  try {
    const std::string text = read_state_text(dir / kStateFile);
    const json state = parse_state_json(dir / kStateFile, text);
    SafeTensorsFile::open((dir / kModelFile).string());
    if (has_optimizer_state(state))
      for (const std::string& file : optimizer_files(state)) {
        if (!fs::is_regular_file(dir / file, ec))
          return (dir / file).string() +
                 ": missing (incomplete checkpoint; state.json says it was saved with optimizer '" +
                 state["optimizer"].get<std::string>() + "')";
        SafeTensorsFile::open((dir / file).string());
      }
    std::string reason = facts_reason(dir, state);
    if (!reason.empty()) return reason;

    const std::string key = identity_key(dir, text, state);
    const std::string where = fs::absolute(dir, ec).lexically_normal().string();
    {
      std::lock_guard<std::mutex> lock(g_verified_mutex);
      auto it = g_verified.find(where);
      if (!key.empty() && it != g_verified.end() && it->second.key == key) return it->second.reason;
    }
    if (!state.contains("files"))
      spdlog::info("checkpoint: {} was saved without checksums (neox {}); its files cannot be verified", dir.string(),
                   state.value("neox_version", std::string("?")));
    reason = contents_reason(dir, state);
    std::lock_guard<std::mutex> lock(g_verified_mutex);
    if (!key.empty()) g_verified[where] = {key, reason};
    return reason;
  } catch (const Error& e) {
    return e.what();
  }
}

// Removes .tmp-* entries of crashed or failed saves by other processes.
// Called with the save directory's lock held (`locked`): every writer holds
// it from before it makes a temporary directory until that is installed or
// removed, so those of other processes are left by processes that are gone.
// Without a lock (a file system without flock) they are left alone: nothing
// proves that their writer is not still saving.
void remove_stale_temporaries(const fs::path& root, bool locked) {
  std::string own(1, '-');
  own += std::to_string(::getpid());
  std::error_code ec;
  std::vector<fs::path> stale;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.rfind(kTmpPrefix, 0) != 0) continue;
    if (name.size() >= own.size() && name.compare(name.size() - own.size(), own.size(), own) == 0) continue;
    if (!locked) {
      spdlog::warn("checkpoint: leaving {}: without a lock on {} nothing shows that its writer has stopped",
                   it->path().string(), root.string());
      continue;
    }
    stale.push_back(it->path());
  }
  for (const auto& p : stale) {
    std::error_code rm;
    fs::remove_all(p, rm);
    if (rm)
      spdlog::warn("checkpoint: cannot remove the stale temporary {}: {}", p.string(), rm.message());
    else
      spdlog::info("checkpoint: removed {} (left by an interrupted save)", p.string());
  }
}

// Puts the complete directory `tmp` at `dest`. An existing `dest` is swapped
// out atomically (renameat2 RENAME_EXCHANGE) where the file system can, else
// renamed to `aside` first; the old one is removed afterwards.
void install_directory(const fs::path& tmp, const fs::path& dest, const fs::path& aside) {
  std::error_code ec;
  if (!fs::exists(fs::symlink_status(dest, ec))) {
    if (std::rename(tmp.c_str(), dest.c_str()) != 0) {
      int err = errno;
      throw Error(dest.string() + ": cannot rename " + tmp.string() + " into place: " + errno_message(err));
    }
    return;
  }
  fs::path old;
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, dest.c_str(), RENAME_EXCHANGE) == 0) {
    old = tmp;  // now holds the previous dest
  } else {
    int err = errno;
    if (err != EINVAL && err != ENOSYS && err != ENOTSUP)
      throw Error(dest.string() + ": cannot exchange with " + tmp.string() + ": " + errno_message(err));
    fs::remove_all(aside, ec);
    if (std::rename(dest.c_str(), aside.c_str()) != 0) {
      err = errno;
      throw Error(dest.string() + ": cannot move the existing checkpoint aside to " + aside.string() + ": " +
                  errno_message(err));
    }
    if (std::rename(tmp.c_str(), dest.c_str()) != 0) {
      err = errno;
      std::rename(aside.c_str(), dest.c_str());  // put the old one back
      throw Error(dest.string() + ": cannot rename " + tmp.string() + " into place: " + errno_message(err));
    }
    old = aside;
  }
  sync_path(dest.parent_path(), true);
  fs::remove_all(old, ec);
  if (ec) spdlog::warn("checkpoint: cannot remove the replaced checkpoint {}: {}", old.string(), ec.message());
}

// Keeps the newest keep_last global_step* directories (and always `keep`).
void prune(const fs::path& root, int keep_last, const fs::path& keep) {
  if (keep_last <= 0) return;
  const auto steps = list_steps(root);
  const std::string pid = std::to_string(::getpid());
  for (std::size_t i = static_cast<std::size_t>(keep_last); i < steps.size(); ++i) {
    const fs::path& dir = steps[i].second;
    if (dir.filename() == keep.filename()) continue;
    // Rename first so that an interrupted removal leaves only a .tmp-* entry.
    const fs::path doomed = root / (std::string(kTmpPrefix) + "prune-" + dir.filename().string() + "-" + pid);
    std::error_code ec;
    fs::rename(dir, doomed, ec);
    const fs::path& target = ec ? dir : doomed;
    fs::remove_all(target, ec);
    if (ec)
      spdlog::warn("checkpoint: cannot remove old checkpoint {}: {}", dir.string(), ec.message());
    else
      spdlog::info("checkpoint: removed old checkpoint {} (keep_last {})", dir.string(), keep_last);
  }
}

fs::path normalized(const std::string& path) {
  fs::path p = fs::path(path).lexically_normal();
  if (!p.has_filename() && p.has_parent_path()) p = p.parent_path();
  return p;
}

// Host copies of the optimizer's state (views where it already lives on the host).
std::vector<std::pair<std::string, Tensor>> optimizer_tensors(Optimizer& optimizer, Backend& backend) {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& [name, t] : optimizer.state()) {
    if (t.numel() > 0 && !t.defined())
      throw Error("save_checkpoint: optimizer '" + optimizer.name() + "' state tensor '" + name + "' is undefined");
    out.emplace_back(name, t.device().is_cpu() || t.numel() == 0 ? t : backend.to_host(t));
  }
  return out;
}

}  // namespace

namespace {

// This rank's part of a partitioned optimizer's state, with the ranges it covers.
void write_optimizer_shard(const fs::path& dir, Optimizer& optimizer, Backend& backend, int rank, int ranks,
                           std::int64_t parameters) {
  auto tensors = optimizer_tensors(optimizer, backend);
  for (const auto& [name, t] : tensors)
    if (name == kRangesTensor)
      throw Error("save_checkpoint: optimizer '" + optimizer.name() + "' has a state tensor named '" + kRangesTensor +
                  "', which checkpoints reserve");
  const std::vector<ParamRange> ranges = optimizer.state_ranges();
  Tensor r = Tensor::zeros_host({static_cast<std::int64_t>(ranges.size()), 2}, DType::i64);
  for (std::size_t i = 0; i < ranges.size(); ++i) {
    r.ptr<std::int64_t>()[2 * i] = ranges[i].offset;
    r.ptr<std::int64_t>()[2 * i + 1] = ranges[i].count;
  }
  tensors.emplace_back(kRangesTensor, r);
  const std::map<std::string, std::string> meta = {
      {"format", "neox-optimizer-shard"}, {"format_version", std::to_string(kFormatVersion)},
      {"optimizer", optimizer.name()},    {"rank", std::to_string(rank)},
      {"ranks", std::to_string(ranks)},   {"parameters", std::to_string(parameters)},
  };
  write_safetensors((dir / shard_file(rank)).string(), tensors, meta);
}

// Every rank learns whether every rank succeeded: -1, or the highest rank that failed.
int first_failure(Communicator* comm, bool ok) {
  const int rank = comm ? comm->rank() : 0;
  if (!comm || comm->size() == 1) return ok ? -1 : rank;
  Tensor flag = Tensor::zeros_host({1}, DType::i64);
  flag.ptr<std::int64_t>()[0] = ok ? -1 : rank;
  comm->all_reduce(flag, ReduceOp::max);
  return static_cast<int>(flag.ptr<std::int64_t>()[0]);
}

}  // namespace

// --- the save directory's lock ----------------------------------------------

namespace {

// Save directories this process holds the lock on (canonical path -> 1), or
// could not lock because the file system has no flock (-> 0).
std::mutex g_locks_mutex;
std::map<std::string, int> g_locks;

std::string canonical_key(const std::string& dir) {
  std::error_code ec;
  fs::path p = fs::weakly_canonical(normalized(dir), ec);
  if (ec) p = fs::absolute(normalized(dir), ec).lexically_normal();
  return p.string();
}

// The holder recorded in a lock file, for the message.
std::string lock_holder(int fd) {
  char buf[512] = {};
  ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  std::string text = n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  return text.empty() ? std::string("a process that has not written its pid yet") : text;
}

}  // namespace

SaveDirectoryLock::SaveDirectoryLock(const std::string& save_dir) {
  if (save_dir.empty()) throw Error("save directory lock: the save directory is empty");
  const fs::path root = normalized(save_dir);
  std::error_code ec;
  created_ = !fs::exists(root, ec);
  fs::create_directories(root, ec);
  if (ec) throw Error(root.string() + ": cannot create the save directory: " + ec.message());
  dir_ = root.string();
  key_ = canonical_key(save_dir);
  file_ = (root / kLockFile).string();
  {
    std::lock_guard<std::mutex> lock(g_locks_mutex);
    if (g_locks.count(key_))
      throw Error(root.string() +
                  ": this process already holds the lock on this save directory (two writers in one "
                  "process)");
  }
  // The holder removes the file before it lets go, so a file opened before
  // that and locked after it is no longer the lock: check and start over.
  for (int attempt = 0;; ++attempt) {
    fd_ = ::open(file_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd_ < 0) {
      int err = errno;
      throw Error(file_ + ": cannot create the save directory's lock file: " + errno_message(err));
    }
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      int err = errno;
      if (err == EWOULDBLOCK) {
        const std::string holder = lock_holder(fd_);
        ::close(fd_);
        fd_ = -1;
        throw Error(root.string() + ": another neox process is saving checkpoints here (" + holder + " holds " + file_ +
                    "); two runs in one save directory would delete each other's saves: wait for it to "
                    "finish, or save elsewhere (training.save)");
      }
      if (err == ENOLCK || err == EOPNOTSUPP || err == ENOSYS || err == EINVAL) {
        spdlog::warn("checkpoint: {}: the file system cannot lock ({}); nothing stops another run from saving here",
                     file_, errno_message(err));
        ::close(fd_);
        ::unlink(file_.c_str());  // nobody can hold it there
        fd_ = -1;
        std::lock_guard<std::mutex> lock(g_locks_mutex);
        g_locks[key_] = 0;
        return;
      }
      ::close(fd_);
      fd_ = -1;
      throw Error(file_ + ": cannot lock: " + errno_message(err));
    }
    struct stat held {
    }, named{};
    if (::fstat(fd_, &held) == 0 && ::stat(file_.c_str(), &named) == 0 && held.st_dev == named.st_dev &&
        held.st_ino == named.st_ino)
      break;
    ::close(fd_);
    fd_ = -1;
    if (attempt >= 100) throw Error(file_ + ": cannot lock: the file keeps being replaced");
  }
  const std::string who = "pid " + std::to_string(::getpid()) + " on host " + host_name() + "\n";
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, who.data(), who.size(), 0) != static_cast<ssize_t>(who.size()))
    spdlog::warn("checkpoint: {}: cannot record the pid in the lock file: {}", file_, errno_message(errno));
  std::lock_guard<std::mutex> lock(g_locks_mutex);
  g_locks[key_] = 1;
}

SaveDirectoryLock::~SaveDirectoryLock() {
  if (fd_ >= 0) {
    // Removed while still held, so that a finished run leaves no lock file;
    // a process waiting on the old file sees that it was replaced.
    struct stat held {
    }, named{};
    if (::fstat(fd_, &held) == 0 && ::stat(file_.c_str(), &named) == 0 && held.st_dev == named.st_dev &&
        held.st_ino == named.st_ino)
      ::unlink(file_.c_str());
    ::close(fd_);
  }
  if (created_) ::rmdir(dir_.c_str());  // fails, as it should, unless empty
  std::lock_guard<std::mutex> lock(g_locks_mutex);
  g_locks.erase(key_);
}

bool SaveDirectoryLock::held(const std::string& save_dir) {
  const std::string key = canonical_key(save_dir);
  std::lock_guard<std::mutex> lock(g_locks_mutex);
  return g_locks.count(key) > 0;
}

namespace {
// Whether this process holds a real lock (not the no-flock fallback).
bool locked_for_real(const std::string& save_dir) {
  const std::string key = canonical_key(save_dir);
  std::lock_guard<std::mutex> lock(g_locks_mutex);
  auto it = g_locks.find(key);
  return it != g_locks.end() && it->second == 1;
}
}  // namespace

std::string newest_checkpoint(const std::string& save_dir) {
  const fs::path root = normalized(save_dir);
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return "";
  try {
    std::string named = read_file(root / kLatest);
    while (!named.empty() && std::isspace(static_cast<unsigned char>(named.back()))) named.pop_back();
    if (step_of(named) && fs::is_directory(root / named, ec)) return (root / named).string();
  } catch (const Error&) {
  }
  const auto steps = list_steps(root);
  if (!steps.empty()) return steps.front().second.string();
  if (fs::exists(fs::symlink_status(root / kLatest, ec))) return (root / kLatest).string();
  return "";
}

std::string save_checkpoint(const std::string& save_dir, GPTNeoX& model, Optimizer* optimizer,
                            const CheckpointState& state, int keep_last, Communicator* comm) {
  if (state.iteration < 0)
    throw Error("save_checkpoint: iteration " + std::to_string(state.iteration) + " is negative");
  if (keep_last < 0) throw Error("save_checkpoint: keep_last " + std::to_string(keep_last) + " is negative");
  if (save_dir.empty()) throw Error("save_checkpoint: the save directory is empty");
  const int rank = comm ? comm->rank() : 0;
  const int ranks = comm ? comm->size() : 1;
  const bool sharded = optimizer && optimizer->partitions_state();
  const fs::path root = normalized(save_dir);
  const std::string name = kStepPrefix + std::to_string(state.iteration);
  const fs::path dest = root / name;
  auto not_saved = [&](const std::string& why) {
    return "checkpoint " + dest.string() + " not saved: " + why + "; the checkpoints already in " + root.string() +
           " are unchanged";
  };

  // 0. Non-finite weights are never saved. The cheap check first, before
  // anything is written: the sum of squares of the arena (partitioned
  // parameters are checked in the file, below, as every saved value is).
  std::string failure;
  bool ok = true;
  if (!model.arena().params_partitioned()) {
    const double ss = model.backend().kernels.sum_squares(model.arena().params());
    if (!std::isfinite(ss)) {
      ok = false;
      failure = not_saved("the model's weights hold non-finite values (their sum of squares is " +
                          std::string(std::isnan(ss) ? "nan" : "inf") + ")");
    }
  }
  int failed = first_failure(comm, ok);
  if (failed >= 0)
    throw CollectiveError(ok ? not_saved("rank " + std::to_string(failed) + " has non-finite weights") : failure);

  // 1. Rank 0 locks the save directory (unless this process holds the lock
  // for its run) and makes the temporary directory; the others learn its name.
  std::optional<SaveDirectoryLock> save_lock;
  std::int64_t token = -1;
  if (rank == 0) {
    try {
      if (!SaveDirectoryLock::held(save_dir)) save_lock.emplace(save_dir);
      std::error_code ec;
      fs::create_directories(root, ec);
      if (ec) throw Error(root.string() + ": cannot create the save directory: " + ec.message());
      remove_stale_temporaries(root, locked_for_real(save_dir));
      const fs::path tmp = root / (kTmpPrefix + name + "-" + std::to_string(::getpid()));
      fs::remove_all(tmp, ec);
      if (!fs::create_directory(tmp, ec) || ec)
        throw Error(tmp.string() + ": cannot create the temporary checkpoint directory: " +
                    (ec ? ec.message() : std::string("it already exists")));
      token = ::getpid();
    } catch (const Error& e) {
      failure = e.what();
    }
  }
  if (comm && ranks > 1) {
    Tensor t = Tensor::zeros_host({1}, DType::i64);
    t.ptr<std::int64_t>()[0] = token;
    comm->broadcast(t, 0);
    token = t.ptr<std::int64_t>()[0];
  }
  if (token < 0)
    throw Error(rank == 0 ? failure
                          : root.string() + ": rank 0 could not prepare the checkpoint directory (see its error)");
  const fs::path tmp = root / (kTmpPrefix + name + "-" + std::to_string(token));
  auto discard = [&] {
    std::error_code rm;
    if (rank == 0) fs::remove_all(tmp, rm);
  };
  // Size and CRC32C of a file just written into `tmp`, for state.json; and,
  // for tensors, that every value is finite.
  std::map<std::string, FileFact> facts;
  auto record = [&](const std::string& file, bool tensors) {
    if (tensors) {
      std::string reason = nonfinite_reason(tmp / file, file);
      if (!reason.empty()) throw Error(not_saved(reason));
    }
    facts[file] = digest_file(tmp / file);
  };

  // 2. Every rank writes its optimizer shard. Partitioned parameters
  // (ZeRO-3) are gathered one unit at a time by every rank while rank 0
  // writes them: no rank ever holds the whole model.
  if (sharded) {
    try {
      write_optimizer_shard(tmp, *optimizer, model.backend(), rank, ranks, model.arena().numel());
      record(shard_file(rank), true);
    } catch (const Error& e) {
      failure = e.what();
      ok = false;
    }
  }
  const bool partitioned = model.arena().params_partitioned();
  if (partitioned) {
    try {
      write_hf_safetensors(model, (tmp / kModelFile).string(), rank == 0 && ok);
      if (rank == 0 && ok) record(kModelFile, true);
    } catch (const Error& e) {
      if (ok) failure = e.what();
      ok = false;
    }
  }
  failed = first_failure(comm, ok);
  if (failed >= 0) {
    discard();
    throw CollectiveError(ok ? "checkpoint " + name + ": rank " + std::to_string(failed) +
                                   " could not write its part of the checkpoint (see its error); nothing was saved"
                             : failure);
  }
  // Rank 0 records every shard's size and checksum.
  if (sharded) {
    Tensor mine = Tensor::zeros_host({2}, DType::i64);
    const FileFact own = facts.at(shard_file(rank));
    mine.ptr<std::int64_t>()[0] = own.bytes;
    mine.ptr<std::int64_t>()[1] = own.crc;
    Tensor all = Tensor::zeros_host({2 * static_cast<std::int64_t>(ranks)}, DType::i64);
    if (comm && ranks > 1)
      comm->all_gather(mine, all);
    else
      all = mine;
    for (int r = 0; r < ranks; ++r)
      facts[shard_file(r)] = {all.ptr<std::int64_t>()[2 * r],
                              static_cast<std::uint32_t>(all.ptr<std::int64_t>()[2 * r + 1])};
  }

  // 3. Rank 0 writes the rest and installs the directory, then `latest`.
  if (rank == 0) {
    try {
      if (!partitioned) {
        write_hf_safetensors(model, (tmp / kModelFile).string());
        record(kModelFile, true);
      }
      if (optimizer && !sharded) {
        const std::map<std::string, std::string> meta = {
            {"format", "neox-optimizer"},
            {"format_version", std::to_string(kFormatVersion)},
            {"optimizer", optimizer->name()},
            {"parameters", std::to_string(model.arena().numel())},
        };
        write_safetensors((tmp / kOptimizerFile).string(), optimizer_tensors(*optimizer, model.backend()), meta);
        record(kOptimizerFile, true);
      }
      for (const auto& [file, source] : state.files) {
        if (!plain_file_name(file) || file == kModelFile || file == kConfigFile || file == kOptimizerFile)
          throw Error("checkpoint " + name + ": bad file name '" + file + "'");
        write_file_synced(tmp / file, read_file(source));
        record(file, false);
      }
      write_file_synced(tmp / kConfigFile, state.config_toml);
      record(kConfigFile, false);
      // state.json last: its presence marks a directory whose other files were written.
      write_file_synced(tmp / kStateFile, state_json(state, optimizer, sharded ? ranks : 0, facts));
      sync_path(tmp, true);
      install_directory(tmp, dest, root / (std::string(kTmpPrefix) + "old-" + name + "-" + std::to_string(token)));
      const fs::path latest_tmp = root / (std::string(kLatest) + ".tmp");
      const fs::path latest = root / kLatest;
      write_file_synced(latest_tmp, name + "\n");
      if (std::rename(latest_tmp.c_str(), latest.c_str()) != 0) {
        int err = errno;
        throw Error(latest.string() + ": cannot rename " + latest_tmp.string() + " into place: " + errno_message(err));
      }
      sync_path(root, true);
      prune(root, keep_last, dest);
    } catch (const Error& e) {
      failure = e.what();
      ok = false;
      discard();
    }
  }
  failed = first_failure(comm, ok);
  if (failed >= 0)
    throw CollectiveError(ok ? "checkpoint " + name + ": rank 0 could not complete the save (see its error)" : failure);
  if (rank == 0) spdlog::info("checkpoint: saved {} (iteration {})", dest.string(), state.iteration);
  return dest.string();
}

std::string resolve_checkpoint(const std::string& path, const std::map<std::string, std::string>& refused) {
  if (path.empty()) throw Error("checkpoint path is empty");
  const fs::path p = normalized(path);
  std::error_code ec;
  auto unusable = [&](const fs::path& dir) {
    auto it = refused.find(dir.string());
    return it != refused.end() ? it->second : incomplete_reason(dir);
  };
  if (!fs::exists(p, ec)) throw Error(path + ": no such checkpoint or save directory");
  if (!fs::is_directory(p, ec))
    throw Error(path + ": not a directory (expected a global_step<N> checkpoint or a save directory)");

  const bool has_latest = fs::exists(fs::symlink_status(p / kLatest, ec));
  const auto steps = list_steps(p);
  const bool looks_like_checkpoint =
      step_of(p.filename().string()) || fs::exists(p / kStateFile, ec) || fs::exists(p / kModelFile, ec);
  if (looks_like_checkpoint && !has_latest && steps.empty()) {
    std::string reason = unusable(p);
    if (!reason.empty()) throw Error(reason);
    return p.string();
  }
  if (!has_latest && steps.empty())
    throw Error(path + ": no checkpoint here (neither a global_step<N> directory with " + kModelFile + ", " +
                kStateFile + " and " + kConfigFile + ", nor a save directory with 'latest' or global_step<N>)");

  std::string reported;  // named by latest and already warned about
  if (has_latest) {
    std::string named;
    try {
      named = read_file(p / kLatest);
    } catch (const Error& e) {
      spdlog::warn("checkpoint: {}", e.what());
    }
    while (!named.empty() && std::isspace(static_cast<unsigned char>(named.back()))) named.pop_back();
    while (!named.empty() && std::isspace(static_cast<unsigned char>(named.front()))) named.erase(0, 1);
    if (!step_of(named)) {
      spdlog::warn("checkpoint: {} names '{}', not a global_step<N> directory; using the newest complete checkpoint",
                   (p / kLatest).string(), named);
    } else {
      std::string reason = unusable(p / named);
      if (reason.empty()) return (p / named).string();
      spdlog::warn("checkpoint: {} names {}, which is not usable ({}); using the newest complete checkpoint",
                   (p / kLatest).string(), named, reason);
      reported = (p / named).string();
    }
  } else {
    spdlog::warn("checkpoint: {} has no '{}' file; using the newest complete checkpoint", p.string(), kLatest);
  }
  for (const auto& [step, dir] : steps) {
    std::string reason = unusable(dir);
    if (reason.empty()) {
      spdlog::warn("checkpoint: using {}", dir.string());
      return dir.string();
    }
    if (dir.string() != reported) spdlog::warn("checkpoint: skipping {}: {}", dir.string(), reason);
  }
  throw Error(path + ": no complete checkpoint (every global_step<N> directory is incomplete; see the warnings)");
}

std::string read_checkpoint_config(const std::string& path) {
  const fs::path dir = resolve_checkpoint(path);
  return read_file(dir / kConfigFile);
}

namespace {

// Ranges with the position of each one's data in their concatenation
// (state tensors hold the ranges' elements in list order), sorted by offset.
struct PlacedRange {
  ParamRange range;
  std::int64_t pos = 0;
};
std::vector<PlacedRange> sorted_by_offset(const std::vector<ParamRange>& ranges) {
  std::vector<PlacedRange> placed;
  std::int64_t pos = 0;
  for (const ParamRange& r : ranges) {
    placed.push_back({r, pos});
    pos += r.count;
  }
  std::sort(placed.begin(), placed.end(),
            [](const PlacedRange& a, const PlacedRange& b) { return a.range.offset < b.range.offset; });
  return placed;
}

// The optimizer state saved in `dir` (one whole file or per-rank shards),
// assembled for the ranges `optimizer` owns now (state_ranges() when it
// partitions its state, else the whole arena), as host tensors. Checks everything; throws naming the file.
TensorMap read_optimizer_state(const fs::path& dir, const json& sj, Optimizer& optimizer, std::int64_t parameters) {
  const std::string first = (dir / optimizer_files(sj).front()).string();
  if (!has_optimizer_state(sj))
    throw Error(first +
                ": the checkpoint has no optimizer state (it was saved without an optimizer, e.g. by "
                "'neox convert --from-hf'); load it without one (finetune = true loads weights only)");
  const std::string saved_by = sj["optimizer"].get<std::string>();
  const std::string saved_kind = sj.value("optimizer_state", saved_by);
  if (saved_kind != optimizer.state_kind())
    throw Error(first + ": optimizer state of '" + saved_by + "' (" + saved_kind + " state), but this run uses '" +
                optimizer.name() + "' (" + optimizer.state_kind() + " state; load weights only with finetune = true)");

  struct Source {
    SafeTensorsFile file;
    std::vector<ParamRange> ranges;
    std::int64_t total = 0;
  };
  std::vector<Source> sources;
  const bool sharded = sj.contains("optimizer_shards");
  for (const std::string& name : optimizer_files(sj)) {
    Source src{SafeTensorsFile::open((dir / name).string()), {}, 0};
    const std::string& path = src.file.path();
    auto it = src.file.metadata().find("parameters");
    if (it != src.file.metadata().end() && it->second != std::to_string(parameters))
      throw Error(path + ": saved for a model of " + it->second + " parameters, this model has " +
                  std::to_string(parameters) + " (does the config match the checkpoint's?)");
    if (sharded) {
      Tensor r = src.file.read(kRangesTensor, DType::i64);
      if (r.ndim() != 2 || r.dim(1) != 2)
        throw Error(path + ": '" + kRangesTensor + "' must be [k, 2], got " + r.str());
      for (std::int64_t i = 0; i < r.dim(0); ++i) {
        const ParamRange pr{r.ptr<std::int64_t>()[2 * i], r.ptr<std::int64_t>()[2 * i + 1]};
        if (pr.offset < 0 || pr.count < 0 || pr.offset > parameters || pr.count > parameters - pr.offset)
          throw Error(path + ": range [" + std::to_string(pr.offset) + ", " + std::to_string(pr.offset + pr.count) +
                      ") is outside the model's " + std::to_string(parameters) + " parameters");
        src.ranges.push_back(pr);
        src.total += pr.count;
      }
    } else {
      src.ranges = {{0, parameters}};
      src.total = parameters;
    }
    sources.push_back(std::move(src));
  }

  const std::vector<ParamRange> wanted =
      optimizer.partitions_state() ? optimizer.state_ranges() : std::vector<ParamRange>{{0, parameters}};
  std::int64_t wanted_total = 0;
  for (const auto& w : wanted) wanted_total += w.count;
  const std::vector<PlacedRange> wanted_sorted = sorted_by_offset(wanted);
  std::vector<std::vector<PlacedRange>> sources_sorted;
  for (const Source& src : sources) sources_sorted.push_back(sorted_by_offset(src.ranges));

  const TensorMap current = optimizer.state();
  TensorMap out;
  for (const auto& [name, t] : current) {
    if (t.dtype() != DType::f32 || t.numel() != wanted_total)
      throw Error("optimizer '" + optimizer.name() + "': state tensor '" + name + "' is " + t.str() +
                  ", expected f32 with one element per parameter it covers (" + std::to_string(wanted_total) + ")");
    Tensor dst = Tensor::zeros_host({wanted_total}, DType::f32);
    std::int64_t copied = 0;
    for (std::size_t k = 0; k < sources.size(); ++k) {
      const Source& src = sources[k];
      const std::string& path = src.file.path();
      if (!src.file.contains(name)) throw Error(path + ": optimizer state tensor '" + name + "' is missing");
      const SafeTensorInfo& info = src.file.info(name);
      if (info.dtype != DType::f32 || neox::numel(info.shape) != src.total)
        throw Error(path + ": optimizer state tensor '" + name + "' is " + std::string(dtype_name(info.dtype)) +
                    shape_str(info.shape) + ", expected f32[" + std::to_string(src.total) +
                    "] (does the model match the checkpoint's?)");
      // The mapped bytes: only the pages of the ranges this rank needs are read.
      const Tensor view = src.file.view(name);
      const char* from = static_cast<const char*>(view.data());
      // Both lists sorted by offset: one sweep, advancing the range that
      // ends first (linear in the number of ranges, which tiny buckets make
      // large).
      const std::vector<PlacedRange>& have = sources_sorted[k];
      std::size_t i = 0, j = 0;
      while (i < have.size() && j < wanted_sorted.size()) {
        const PlacedRange& s = have[i];
        const PlacedRange& w = wanted_sorted[j];
        const std::int64_t s_end = s.range.offset + s.range.count, w_end = w.range.offset + w.range.count;
        const std::int64_t lo = std::max(s.range.offset, w.range.offset), hi = std::min(s_end, w_end);
        if (lo < hi) {
          std::memcpy(dst.ptr<float>() + w.pos + (lo - w.range.offset),
                      from + static_cast<std::size_t>(s.pos + (lo - s.range.offset)) * sizeof(float),
                      static_cast<std::size_t>(hi - lo) * sizeof(float));
          copied += hi - lo;
        }
        if (s_end <= w_end)
          ++i;
        else
          ++j;
      }
    }
    if (copied != wanted_total)
      throw Error(first + ": the saved optimizer state covers " + std::to_string(copied) + " of the " +
                  std::to_string(wanted_total) +
                  " parameter elements this rank needs (missing or overlapping "
                  "shards: a corrupted or mixed checkpoint)");
    out[name] = dst;
  }
  for (const Source& src : sources)
    for (const auto& info : src.file.tensors())
      if (info.name != kRangesTensor && !current.count(info.name))
        throw Error(src.file.path() + ": unexpected optimizer state tensor '" + info.name + "' (optimizer '" +
                    optimizer.name() + "' does not have it)");
  return out;
}

// Reads the saved state (checking names, dtypes and sizes) and hands it to
// the optimizer, which checks the values: a refusal there is a corrupted
// checkpoint (CorruptCheckpoint), naming the file.
void restore_optimizer_state(const fs::path& dir, const json& sj, Optimizer& optimizer, std::int64_t parameters) {
  TensorMap state = read_optimizer_state(dir, sj, optimizer, parameters);
  try {
    optimizer.load_state(state);
  } catch (const Error& e) {
    throw CorruptCheckpoint((dir / optimizer_files(sj).front()).string() + ": " + e.what(), dir.string());
  }
}

}  // namespace

CheckpointState load_checkpoint(const std::string& path, GPTNeoX& model, Optimizer* optimizer) {
  const fs::path dir = resolve_checkpoint(path);
  const json sj = read_state_json(dir / kStateFile);

  // Check every tensor before changing anything, so that a failed load leaves
  // the model and the optimizer as they were.
  const std::string model_path = (dir / kModelFile).string();
  const SafeTensorsFile weights = SafeTensorsFile::open(model_path);
  const ModelConfig& cfg = model.config();
  ParameterArena& arena = model.arena();
  std::set<std::string> expected;
  for (const auto& spec : arena.specs()) {
    expected.insert(spec.name);
    if (!weights.contains(spec.name))
      throw Error(model_path + ": tensor '" + spec.name + "' is missing (the model has it" +
                  (spec.name == "embed_out.weight" ? "; was the checkpoint saved with tied embeddings?" : "") + ")");
    const SafeTensorInfo& info = weights.info(spec.name);
    if (info.shape != spec.shape)
      throw Error(model_path + ": tensor '" + spec.name + "' has shape " + shape_str(info.shape) +
                  ", the model expects " + shape_str(spec.shape) + " (does the config match the checkpoint's?)");
    if (info.dtype != DType::f32 && info.dtype != DType::f64 && info.dtype != DType::f16 && info.dtype != DType::bf16)
      throw Error(model_path + ": tensor '" + spec.name + "' is " + std::string(dtype_name(info.dtype)) +
                  ", expected a float type");
  }
  for (const auto& t : weights.tensors())
    if (!expected.count(t.name))
      throw Error(model_path + ": unexpected tensor '" + t.name + "' (not a parameter of this model" +
                  (t.name == "embed_out.weight" ? "; the model ties its output layer to embed_in" : "") + ")");

  // The optimizer first: it checks the values before it copies them (and
  // may refuse them), and the weights were checked above.
  if (optimizer) restore_optimizer_state(dir, sj, *optimizer, arena.numel());

  // One tensor at a time (and under ZeRO-3 one unit at a time): the file is
  // mapped, so only the pages being copied are read.
  model.set_parameters([&](int i, Tensor& dst) {
    const std::string& name = arena.specs()[static_cast<std::size_t>(i)].name;
    model.backend().copy_tensor(dst, convert_hf_layout(name, weights.read(name, DType::f32), cfg, false));
  });

  CheckpointState state;
  state.iteration = sj["iteration"].get<std::int64_t>();
  if (sj.contains("data_positions"))
    for (auto& [k, v] : sj["data_positions"].items()) state.data_positions[k] = v.get<std::int64_t>();
  if (sj.contains("rng_state_base64"))
    state.rng_state = *base64_decode(sj["rng_state_base64"].get<std::string>());
  else if (sj.contains("rng_state"))
    state.rng_state = sj["rng_state"].get<std::string>();
  if (sj.contains("trainer"))
    for (auto& [k, v] : sj["trainer"].items()) state.trainer_values[k] = v.get<double>();
  state.config_toml = read_file(dir / kConfigFile);
  if (optimizer)
    spdlog::info("checkpoint: loaded {} (iteration {}, weights and optimizer state)", dir.string(), state.iteration);
  else
    spdlog::info("checkpoint: loaded the weights of {} (iteration {})", dir.string(), state.iteration);
  return state;
}

}  // namespace neox

namespace neox {

void load_optimizer_state(const std::string& path, Optimizer& optimizer, std::int64_t parameters) {
  const fs::path dir = resolve_checkpoint(path);
  const json sj = read_state_json(dir / kStateFile);
  restore_optimizer_state(dir, sj, optimizer, parameters);
  spdlog::info("checkpoint: loaded the optimizer state of {}", dir.string());
}

}  // namespace neox
