// SPDX-License-Identifier: Apache-2.0
// safetensors reader (mmap, validated before use) and atomic writer.
#include "neox/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <limits>
#include <set>
#include <string_view>

#include <nlohmann/json.hpp>

#include "neox/error.h"

namespace neox {

namespace {

constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;
constexpr std::size_t kMaxJsonDepth = 64;

std::string errno_str(int err) { return std::strerror(err); }

// The dtypes neox reads and writes, with their safetensors names.
struct DTypeName {
  const char* st;
  DType dtype;
};
constexpr DTypeName kDTypes[] = {
    {"F64", DType::f64}, {"F32", DType::f32}, {"F16", DType::f16}, {"BF16", DType::bf16},
    {"I64", DType::i64}, {"I32", DType::i32}, {"U16", DType::u16},
};

const char* st_name(DType t) {
  for (const auto& d : kDTypes)
    if (d.dtype == t) return d.st;
  return "?";
}

std::uint64_t load_u64_le(const unsigned char* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = v << 8 | p[i];
  return v;
}

// Reads a JSON value as a non-negative integer (rejecting floats, negatives
// and anything else).
bool as_u64(const nlohmann::json& j, std::uint64_t& out) {
  if (j.is_number_unsigned()) {
    out = j.get<std::uint64_t>();
    return true;
  }
  if (j.is_number_integer()) {
    auto v = j.get<std::int64_t>();
    if (v < 0) return false;
    out = static_cast<std::uint64_t>(v);
    return true;
  }
  return false;
}

// Parses the header, rejecting duplicate keys and deep nesting (which
// nlohmann would silently accept).
nlohmann::json parse_header(const std::string& path, const char* begin, const char* end) {
  std::vector<std::set<std::string>> keys;  // one set per open container
  std::string duplicate;
  auto cb = [&](int /*depth*/, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    switch (event) {
      case E::object_start:
      case E::array_start:
        keys.emplace_back();
        if (keys.size() > kMaxJsonDepth) {
          throw Error(path + ": header JSON is nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
        }
        break;
      case E::object_end:
      case E::array_end:
        if (!keys.empty()) keys.pop_back();
        break;
      case E::key:
        if (!keys.empty() && parsed.is_string() && !keys.back().insert(parsed.get<std::string>()).second &&
            duplicate.empty())
          duplicate = parsed.get<std::string>();
        break;
      case E::value:
        break;
    }
    return true;
  };
  // nlohmann stops at a NUL byte as if the input ended there; JSON never
  // contains one, so reject it rather than ignore what follows.
  if (const void* nul = std::memchr(begin, '\0', static_cast<std::size_t>(end - begin)))
    throw Error(path + ": header is not valid JSON (NUL byte at header offset " +
                std::to_string(static_cast<const char*>(nul) - begin) + ")");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(begin, end, cb);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(path + ": header is not valid JSON (" + e.what() + ")");
  }
  if (!duplicate.empty()) throw Error(path + ": header has a duplicate key '" + duplicate + "'");
  return j;
}

SafeTensorInfo parse_entry(const std::string& path, const std::string& name, const nlohmann::json& v) {
  const std::string where = path + ": tensor '" + name + "'";
  if (!v.is_object()) throw Error(where + ": entry is not an object");
  for (const char* field : {"dtype", "shape", "data_offsets"})
    if (!v.contains(field)) throw Error(where + ": missing field '" + field + "'");
  for (const auto& [key, unused] : v.items())
    if (key != "dtype" && key != "shape" && key != "data_offsets")
      throw Error(where + ": unexpected field '" + key + "'");

  SafeTensorInfo info;
  info.name = name;

  const auto& dt = v["dtype"];
  if (!dt.is_string()) throw Error(where + ": dtype is not a string");
  const auto& dts = dt.get_ref<const std::string&>();
  bool found = false;
  for (const auto& d : kDTypes)
    if (dts == d.st) {
      info.dtype = d.dtype;
      found = true;
    }
  if (!found)
    throw Error(where + ": dtype '" + dts + "' is not supported (neox reads F64, F32, F16, BF16, I64, I32, U16)");

  const auto& sh = v["shape"];
  if (!sh.is_array()) throw Error(where + ": shape is not an array");
  std::uint64_t n = 1;
  for (const auto& d : sh) {
    std::uint64_t dim = 0;
    if (!as_u64(d, dim) || dim > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
      throw Error(where + ": shape " + sh.dump() + " is not an array of non-negative integers");
    if (dim != 0 && n > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) / dim)
      throw Error(where + ": shape " + sh.dump() + " overflows the element count");
    n *= dim;
    info.shape.push_back(static_cast<std::int64_t>(dim));
  }
  const std::uint64_t esize = dtype_size(info.dtype);
  if (n > std::numeric_limits<std::uint64_t>::max() / esize)
    throw Error(where + ": shape " + sh.dump() + " overflows the byte count");
  const std::uint64_t nbytes = n * esize;

  const auto& off = v["data_offsets"];
  if (!off.is_array() || off.size() != 2 || !as_u64(off[0], info.begin) || !as_u64(off[1], info.end))
    throw Error(where + ": data_offsets " + off.dump() + " is not two non-negative integers");
  if (info.begin > info.end) throw Error(where + ": data_offsets " + off.dump() + " has begin > end");
  if (info.end - info.begin != nbytes)
    throw Error(where + ": data_offsets " + off.dump() + " span " + std::to_string(info.end - info.begin) +
                " bytes but " + std::string(st_name(info.dtype)) + shape_str(info.shape) + " needs " +
                std::to_string(nbytes) + " bytes");
  return info;
}

// --- element conversion ---------------------------------------------------

template <typename T>
T load(const void* p, std::int64_t i) {
  T v;
  std::memcpy(&v, static_cast<const char*>(p) + i * static_cast<std::int64_t>(sizeof(T)), sizeof(T));
  return v;
}
template <typename T>
void store(void* p, std::int64_t i, T v) {
  std::memcpy(static_cast<char*>(p) + i * static_cast<std::int64_t>(sizeof(T)), &v, sizeof(T));
}

// double -> float, round to nearest even, overflow to +-inf (a plain cast of
// an out-of-range double is undefined behaviour).
float double_to_float(double d) {
  constexpr double kOverflow = 0x1.ffffffp127;  // FLT_MAX + half an ulp: rounds to inf
  if (d >= kOverflow) return std::numeric_limits<float>::infinity();
  if (d <= -kOverflow) return -std::numeric_limits<float>::infinity();
  return static_cast<float>(d);
}

// double -> float rounding to odd (truncate, then set the last bit when
// inexact); a second rounding to bf16/f16 then gives the correctly rounded
// result, avoiding the double-rounding error of going through nearest float.
float double_to_float_odd(double d) {
  constexpr float kMax = std::numeric_limits<float>::max();
  if (!std::isfinite(d)) return static_cast<float>(d);
  // Beyond FLT_MAX truncation gives FLT_MAX, whose last bit is already odd.
  if (d > static_cast<double>(kMax)) return kMax;
  if (d < -static_cast<double>(kMax)) return -kMax;
  float f = static_cast<float>(d);
  if (static_cast<double>(f) == d) return f;
  if (std::fabs(static_cast<double>(f)) > std::fabs(d)) f = std::nextafter(f, 0.0f);
  std::uint32_t bits;
  std::memcpy(&bits, &f, 4);
  bits |= 1u;
  std::memcpy(&f, &bits, 4);
  return f;
}

bool is_float(DType t) { return t == DType::f64 || t == DType::f32 || t == DType::f16 || t == DType::bf16; }
bool is_int(DType t) { return t == DType::i64 || t == DType::i32 || t == DType::u16; }

template <typename Load, typename Store>
void convert_loop(void* dst, const void* src, std::int64_t n, Load ld, Store st) {
  for (std::int64_t i = 0; i < n; ++i) st(dst, i, ld(src, i));
}

void convert_float(void* dst, DType dt, const void* src, DType st, std::int64_t n) {
  // f64 sources: each target rounds once from double.
  if (st == DType::f64) {
    auto ld = [](const void* p, std::int64_t i) { return load<double>(p, i); };
    switch (dt) {
      case DType::f32:
        return convert_loop(dst, src, n, ld,
                            [](void* p, std::int64_t i, double v) { store(p, i, double_to_float(v)); });
      case DType::bf16:
        return convert_loop(dst, src, n, ld, [](void* p, std::int64_t i, double v) {
          store(p, i, float_to_bf16(double_to_float_odd(v)));
        });
      case DType::f16:
        return convert_loop(dst, src, n, ld, [](void* p, std::int64_t i, double v) {
          store(p, i, float_to_f16(double_to_float_odd(v)));
        });
      default:
        break;
    }
  }
  // Other sources widen exactly to float, then round once.
  auto run = [&](auto ld) {
    switch (dt) {
      case DType::f64:
        return convert_loop(dst, src, n, ld,
                            [](void* p, std::int64_t i, float v) { store(p, i, static_cast<double>(v)); });
      case DType::f32:
        return convert_loop(dst, src, n, ld, [](void* p, std::int64_t i, float v) { store(p, i, v); });
      case DType::bf16:
        return convert_loop(dst, src, n, ld, [](void* p, std::int64_t i, float v) { store(p, i, float_to_bf16(v)); });
      case DType::f16:
        return convert_loop(dst, src, n, ld, [](void* p, std::int64_t i, float v) { store(p, i, float_to_f16(v)); });
      default:
        break;
    }
  };
  switch (st) {
    case DType::f32:
      return run([](const void* p, std::int64_t i) { return load<float>(p, i); });
    case DType::bf16:
      return run([](const void* p, std::int64_t i) { return bf16_to_float(load<std::uint16_t>(p, i)); });
    case DType::f16:
      return run([](const void* p, std::int64_t i) { return f16_to_float(load<std::uint16_t>(p, i)); });
    default:
      break;
  }
}

[[noreturn]] void int_range_error(std::int64_t i, std::int64_t v, DType dt) {
  throw Error("convert_host: element " + std::to_string(i) + " (value " + std::to_string(v) + ") does not fit " +
              std::string(dtype_name(dt)));
}

void convert_int(void* dst, DType dt, const void* src, DType st, std::int64_t n) {
  auto run = [&](auto ld) {
    switch (dt) {
      case DType::i64:
        return convert_loop(dst, src, n, ld, [](void* p, std::int64_t i, std::int64_t v) { store(p, i, v); });
      case DType::i32:
        return convert_loop(dst, src, n, ld, [](void* p, std::int64_t i, std::int64_t v) {
          if (v < std::numeric_limits<std::int32_t>::min() || v > std::numeric_limits<std::int32_t>::max())
            int_range_error(i, v, DType::i32);
          store(p, i, static_cast<std::int32_t>(v));
        });
      case DType::u16:
        return convert_loop(dst, src, n, ld, [](void* p, std::int64_t i, std::int64_t v) {
          if (v < 0 || v > std::numeric_limits<std::uint16_t>::max()) int_range_error(i, v, DType::u16);
          store(p, i, static_cast<std::uint16_t>(v));
        });
      default:
        break;
    }
  };
  switch (st) {
    case DType::i64:
      return run([](const void* p, std::int64_t i) { return load<std::int64_t>(p, i); });
    case DType::i32:
      return run([](const void* p, std::int64_t i) { return static_cast<std::int64_t>(load<std::int32_t>(p, i)); });
    case DType::u16:
      return run([](const void* p, std::int64_t i) { return static_cast<std::int64_t>(load<std::uint16_t>(p, i)); });
    default:
      break;
  }
}

// Removes the temporary file unless released (on every error path).
struct TempFile {
  std::string path;
  std::FILE* f = nullptr;
  bool keep = false;
  ~TempFile() {
    if (f) std::fclose(f);
    if (!keep) ::unlink(path.c_str());
  }
};

}  // namespace

// --- reader -----------------------------------------------------------------

struct SafeTensorsFile::Mapping {
  void* addr = nullptr;
  std::size_t size = 0;
  std::uint64_t header_len = 0;
  Mapping() = default;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    if (addr) ::munmap(addr, size);
  }
  const unsigned char* bytes() const { return static_cast<const unsigned char*>(addr); }
  std::uint64_t data_start() const { return 8 + header_len; }
};

SafeTensorsFile SafeTensorsFile::open(const std::string& path) {
  SafeTensorsFile f;
  f.path_ = path;
  auto mapping = std::make_shared<Mapping>();

  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(path + ": cannot open: " + errno_str(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    throw Error(path + ": cannot stat: " + errno_str(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(path + ": not a regular file");
  }
  const auto file_size = static_cast<std::uint64_t>(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    throw Error(path + ": file is too short (" + std::to_string(file_size) +
                " bytes) to hold the 8-byte header length");
  }
  void* addr = ::mmap(nullptr, static_cast<std::size_t>(file_size), PROT_READ, MAP_PRIVATE, fd, 0);
  int map_err = errno;
  ::close(fd);
  if (addr == MAP_FAILED) throw Error(path + ": cannot mmap: " + errno_str(map_err));
  mapping->addr = addr;
  mapping->size = static_cast<std::size_t>(file_size);
  const unsigned char* base = mapping->bytes();

  const std::uint64_t n = load_u64_le(base);
  if (n > kMaxHeaderBytes)
    throw Error(path + ": header length " + std::to_string(n) + " exceeds the limit of " +
                std::to_string(kMaxHeaderBytes) + " bytes");
  if (8 + n > file_size)
    throw Error(path + ": header length " + std::to_string(n) + " runs past the end of the file (" +
                std::to_string(file_size) + " bytes)");
  mapping->header_len = n;
  const std::uint64_t data_size = file_size - 8 - n;

  const char* hbegin = reinterpret_cast<const char*>(base + 8);
  nlohmann::json header = parse_header(path, hbegin, hbegin + n);
  if (!header.is_object()) throw Error(path + ": header is not a JSON object");

  try {
    for (const auto& [key, value] : header.items()) {
      if (key == "__metadata__") {
        if (!value.is_object()) throw Error(path + ": __metadata__ is not an object");
        for (const auto& [mk, mv] : value.items()) {
          if (!mv.is_string()) throw Error(path + ": __metadata__ value of '" + mk + "' is not a string");
          f.metadata_[mk] = mv.get<std::string>();
        }
        continue;
      }
      SafeTensorInfo info = parse_entry(path, key, value);
      if (info.end > data_size)
        throw Error(path + ": tensor '" + key + "': data_offsets [" + std::to_string(info.begin) + ", " +
                    std::to_string(info.end) + "] run past the end of the data section (" + std::to_string(data_size) +
                    " bytes)");
      f.tensors_.push_back(std::move(info));
    }
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {  // nlohmann type errors etc. (not expected)
    throw Error(path + ": invalid header (" + e.what() + ")");
  }

  std::stable_sort(f.tensors_.begin(), f.tensors_.end(), [](const SafeTensorInfo& a, const SafeTensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  std::uint64_t expected = 0;
  const SafeTensorInfo* prev = nullptr;
  for (const auto& t : f.tensors_) {
    if (t.begin < expected)
      throw Error(path + ": tensor '" + t.name + "' [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
                  ") overlaps tensor '" + prev->name + "' [" + std::to_string(prev->begin) + ", " +
                  std::to_string(prev->end) + ")");
    if (t.begin > expected)
      throw Error(path + ": gap in the data section: bytes [" + std::to_string(expected) + ", " +
                  std::to_string(t.begin) + ") belong to no tensor");
    expected = t.end;
    prev = &t;
  }
  if (expected != data_size)
    throw Error(path + ": data section has " + std::to_string(data_size) + " bytes but the tensors cover " +
                std::to_string(expected) + " (gap or trailing bytes at the end)");

  for (std::size_t i = 0; i < f.tensors_.size(); ++i) f.index_[f.tensors_[i].name] = i;
  f.mapping_ = std::move(mapping);
  return f;
}

bool SafeTensorsFile::contains(const std::string& name) const { return index_.count(name) != 0; }

const SafeTensorInfo& SafeTensorsFile::info(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) throw Error(path_ + ": no tensor named '" + name + "'");
  return tensors_[it->second];
}

Tensor SafeTensorsFile::view(const std::string& name) const {
  const SafeTensorInfo& t = info(name);
  const unsigned char* p = mapping_->bytes() + mapping_->data_start() + t.begin;
  std::shared_ptr<const void> owner = mapping_;
  return Tensor::wrap_shared(const_cast<unsigned char*>(p), t.shape, t.dtype, std::move(owner));
}

Tensor SafeTensorsFile::read(const std::string& name, DType dtype) const {
  const SafeTensorInfo& t = info(name);
  Tensor out = Tensor::empty(nullptr, t.shape, dtype);
  const unsigned char* p = mapping_->bytes() + mapping_->data_start() + t.begin;
  try {
    convert_host(out.data(), dtype, p, t.dtype, out.numel());
  } catch (const Error& e) {
    throw Error(path_ + ": tensor '" + name + "': " + e.what());
  }
  return out;
}

// --- conversion -------------------------------------------------------------

void convert_host(void* dst, DType dst_dtype, const void* src, DType src_dtype, std::int64_t n) {
  if (n < 0) throw Error("convert_host: negative element count " + std::to_string(n));
  const bool floats = is_float(dst_dtype) && is_float(src_dtype);
  const bool ints = is_int(dst_dtype) && is_int(src_dtype);
  if (!floats && !ints)
    throw Error("convert_host: cannot convert " + std::string(dtype_name(src_dtype)) + " to " +
                std::string(dtype_name(dst_dtype)) + " (only floats to floats and integers to integers)");
  if (n == 0) return;
  if (dst_dtype == src_dtype) {
    std::memcpy(dst, src, static_cast<std::size_t>(n) * dtype_size(src_dtype));
    return;
  }
  if (floats)
    convert_float(dst, dst_dtype, src, src_dtype, n);
  else
    convert_int(dst, dst_dtype, src, src_dtype, n);
}

// --- writer -----------------------------------------------------------------

// --- writer -----------------------------------------------------------------

struct SafeTensorsWriter::Impl {
  std::string path;
  std::vector<Entry> layout;
  std::size_t next = 0;
  TempFile tmp;
  bool finished = false;

  [[noreturn]] void fail(const std::string& what) {
    int err = errno;
    throw Error(path + ": " + what + " " + tmp.path + ": " + errno_str(err));
  }
};

SafeTensorsWriter::SafeTensorsWriter(const std::string& path, std::vector<Entry> layout,
                                     const std::map<std::string, std::string>& metadata)
    : impl_(std::make_unique<Impl>()) {
  Impl& w = *impl_;
  w.path = path;
  // Validate and build the header before touching the file system.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  std::set<std::string> names;
  std::uint64_t offset = 0;
  for (const Entry& e : layout) {
    if (e.name == "__metadata__") throw Error(path + ": '__metadata__' cannot be used as a tensor name");
    if (!names.insert(e.name).second) throw Error(path + ": duplicate tensor name '" + e.name + "'");
    for (std::int64_t d : e.shape)
      if (d < 0) throw Error(path + ": tensor '" + e.name + "' has a negative dimension " + shape_str(e.shape));
    const std::uint64_t bytes = static_cast<std::uint64_t>(neox::numel(e.shape)) * dtype_size(e.dtype);
    nlohmann::ordered_json entry = nlohmann::ordered_json::object();
    entry["dtype"] = st_name(e.dtype);
    entry["shape"] = e.shape;
    entry["data_offsets"] = {offset, offset + bytes};
    header[e.name] = std::move(entry);
    offset += bytes;
  }
  w.layout = std::move(layout);
  std::string text;
  try {
    text = header.dump();
  } catch (const std::exception& e) {
    throw Error(path + ": cannot encode the header (tensor names and metadata must be UTF-8): " + e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');

  w.tmp.path = path + ".tmp." + std::to_string(::getpid());
  w.tmp.f = std::fopen(w.tmp.path.c_str(), "wb");
  if (!w.tmp.f) {
    int err = errno;
    w.tmp.keep = true;  // nothing was created
    throw Error(path + ": cannot create " + w.tmp.path + ": " + errno_str(err));
  }
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(static_cast<std::uint64_t>(text.size()) >> (8 * i));
  if (std::fwrite(len, 1, 8, w.tmp.f) != 8) w.fail("cannot write");
  if (std::fwrite(text.data(), 1, text.size(), w.tmp.f) != text.size()) w.fail("cannot write");
}

SafeTensorsWriter::~SafeTensorsWriter() = default;  // an unfinished file is removed by TempFile
SafeTensorsWriter::SafeTensorsWriter(SafeTensorsWriter&&) noexcept = default;
SafeTensorsWriter& SafeTensorsWriter::operator=(SafeTensorsWriter&&) noexcept = default;

const std::string& SafeTensorsWriter::path() const { return impl_->path; }

void SafeTensorsWriter::write(const std::string& name, const Tensor& t) {
  Impl& w = *impl_;
  if (w.finished) throw Error(w.path + ": tensor '" + name + "' written after finish()");
  if (w.next >= w.layout.size())
    throw Error(w.path + ": tensor '" + name + "' written after the " + std::to_string(w.layout.size()) +
                " tensors of the layout");
  const Entry& e = w.layout[w.next];
  if (name != e.name)
    throw Error(w.path + ": tensor '" + name + "' written where the layout has '" + e.name +
                "' (tensors go in layout order)");
  if (t.dtype() != e.dtype || t.shape() != e.shape)
    throw Error(w.path + ": tensor '" + name + "' is " + t.str() + ", the layout says " +
                std::string(dtype_name(e.dtype)) + shape_str(e.shape));
  if (!t.device().is_cpu())
    throw Error(w.path + ": tensor '" + name + "' is " + t.str() + "; the writer needs host (cpu) tensors");
  if (!t.defined() && t.numel() != 0) throw Error(w.path + ": tensor '" + name + "' is undefined");
  if (t.bytes() > 0 && std::fwrite(t.data(), 1, t.bytes(), w.tmp.f) != t.bytes()) w.fail("cannot write");
  ++w.next;
}

void SafeTensorsWriter::finish() {
  Impl& w = *impl_;
  if (w.finished) return;
  if (w.next != w.layout.size())
    throw Error(w.path + ": finish() after " + std::to_string(w.next) + " of the " + std::to_string(w.layout.size()) +
                " tensors (next: '" + w.layout[w.next].name + "')");
  if (std::fflush(w.tmp.f) != 0) w.fail("cannot write");
  if (::fsync(::fileno(w.tmp.f)) != 0) w.fail("cannot sync");
  std::FILE* f = w.tmp.f;
  w.tmp.f = nullptr;
  if (std::fclose(f) != 0) w.fail("cannot close");
  if (std::rename(w.tmp.path.c_str(), w.path.c_str()) != 0) {
    int err = errno;
    throw Error(w.path + ": cannot rename " + w.tmp.path + " into place: " + errno_str(err));
  }
  w.tmp.keep = true;
  w.finished = true;
  // Make the rename durable (best effort).
  std::string dir = w.path.find('/') == std::string::npos ? "." : w.path.substr(0, w.path.rfind('/') + 1);
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
}

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<SafeTensorsWriter::Entry> layout;
  layout.reserve(tensors.size());
  for (const auto& [name, t] : tensors) {
    if (!t.device().is_cpu())
      throw Error(path + ": tensor '" + name + "' is " + t.str() + "; write_safetensors needs host (cpu) tensors");
    if (neox::numel(t.shape()) != t.numel() || (!t.defined() && t.numel() != 0))
      throw Error(path + ": tensor '" + name + "' is undefined");
    layout.push_back({name, t.dtype(), t.shape()});
  }
  SafeTensorsWriter writer(path, std::move(layout), metadata);
  for (const auto& [name, t] : tensors) writer.write(name, t);
  writer.finish();
}

}  // namespace neox
