// SPDX-License-Identifier: Apache-2.0
// Megatron / GPT-NeoX "MMIDIDX" indexed datasets: a validating reader
// (the .bin is memory-mapped, the .idx copied) and a writer whose output is
// byte for byte what GPT-NeoX's MMapIndexedDatasetBuilder writes.
#include "neox/io/indexed_dataset.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>

#include "neox/error.h"

namespace neox {

namespace {

constexpr char kMagic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', '\0', '\0'};
// magic (9) + version u64 (8) + dtype code u8 (1) + item count u64 (8) +
// document index count u64 (8).
constexpr std::uint64_t kHeaderBytes = 34;
constexpr std::uint8_t kCodeInt32 = 4;
constexpr std::uint8_t kCodeUInt16 = 8;

std::string errno_str(int err) { return std::strerror(err); }

// The numpy dtype GPT-NeoX's indexed_dataset.py associates with each code.
std::string code_name(unsigned code) {
  switch (code) {
    case 1:
      return "1 (uint8)";
    case 2:
      return "2 (int8)";
    case 3:
      return "3 (int16)";
    case 4:
      return "4 (int32)";
    case 5:
      return "5 (int64)";
    case 6:
      return "6 (float32)";
    case 7:
      return "7 (float64)";
    case 8:
      return "8 (uint16)";
    default:
      return std::to_string(code) + " (unknown)";
  }
}

template <typename T>
T load(const unsigned char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

// An open file descriptor, closed on scope exit.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// Reads exactly `bytes` bytes at `offset`; throws naming the file.
void read_at(int fd, const std::string& path, void* out, std::uint64_t bytes, std::uint64_t offset) {
  auto* dst = static_cast<unsigned char*>(out);
  std::uint64_t done = 0;
  while (done < bytes) {
    const ssize_t n =
        ::pread(fd, dst + done, static_cast<std::size_t>(bytes - done), static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw Error(path + ": read failed: " + errno_str(errno));
    if (n == 0) throw Error(path + ": read failed: the file shrank while being read");
    done += static_cast<std::uint64_t>(n);
  }
}

}  // namespace

struct IndexedDataset::Mapping {
  const unsigned char* data = nullptr;
  std::size_t size = 0;
  ~Mapping() {
    if (data && size) ::munmap(const_cast<unsigned char*>(data), size);
  }
};

IndexedDataset IndexedDataset::open(const std::string& prefix) {
  const std::string idx_path = prefix + ".idx";
  const std::string bin_path = prefix + ".bin";
  const std::string hint = " (a dataset is given by its prefix: PREFIX.idx and PREFIX.bin must both exist)";
  IndexedDataset ds;
  ds.prefix_ = prefix;

  // ---- .idx: header, counts against the file size, arrays.
  Fd idx_fd;
  idx_fd.fd = ::open(idx_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (idx_fd.fd < 0) throw Error(idx_path + ": cannot open: " + errno_str(errno) + hint);
  struct stat idx_st {};
  if (::fstat(idx_fd.fd, &idx_st) != 0) throw Error(idx_path + ": cannot stat: " + errno_str(errno));
  const auto idx_size = static_cast<std::uint64_t>(idx_st.st_size);
  unsigned char header[kHeaderBytes];
  read_at(idx_fd.fd, idx_path, header, std::min<std::uint64_t>(idx_size, kHeaderBytes), 0);
  if (idx_size < 9 && (idx_size == 0 || std::memcmp(header, kMagic, idx_size) == 0))
    throw Error(idx_path + ": truncated: " + std::to_string(idx_size) + " bytes, shorter than the 34-byte header");
  if (idx_size < 9 || std::memcmp(header, kMagic, 9) != 0)
    throw Error(idx_path +
                ": wrong magic: expected the 9 bytes \"MMIDIDX\\0\\0\" that start a "
                "Megatron/GPT-NeoX mmap indexed dataset index (as written by "
                "tools/datasets/preprocess_data.py)");
  if (idx_size < kHeaderBytes)
    throw Error(idx_path + ": truncated: " + std::to_string(idx_size) + " bytes, shorter than the 34-byte header");
  const auto version = load<std::uint64_t>(header + 9);
  if (version != 1)
    throw Error(idx_path + ": version " + std::to_string(version) + " is not supported (only version 1 is)");
  const unsigned code = header[17];
  if (code == kCodeInt32)
    ds.dtype_ = DType::i32;
  else if (code == kCodeUInt16)
    ds.dtype_ = DType::u16;
  else
    throw Error(idx_path + ": dtype code " + code_name(code) +
                " is not supported; supported codes are 4 (int32) and 8 (uint16)");
  const auto n = load<std::uint64_t>(header + 18);
  const auto d = load<std::uint64_t>(header + 26);
  // Bytes the arrays need: 4n (sizes) + 8n (pointers) + 8d (doc_idx); checked
  // without overflow against what the file holds.
  const std::uint64_t room = idx_size - kHeaderBytes;
  const bool fits = n <= room / 12 && d <= (room - 12 * n) / 8;
  if (!fits || kHeaderBytes + 12 * n + 8 * d != idx_size) {
    std::string need =
        fits ? std::to_string(kHeaderBytes + 12 * n + 8 * d) + " bytes" : std::string("more bytes than the file has");
    throw Error(idx_path + ": the header counts " + std::to_string(n) + " items and " + std::to_string(d) +
                " document index entries, which need " + need + " (34 + 12 per item + 8 per entry), but the file has " +
                std::to_string(idx_size) + " bytes: the index is truncated or corrupt");
  }
  ds.sizes_.resize(n);
  ds.pointers_.resize(n);
  ds.doc_idx_.resize(d);
  read_at(idx_fd.fd, idx_path, ds.sizes_.data(), 4 * n, kHeaderBytes);
  read_at(idx_fd.fd, idx_path, ds.pointers_.data(), 8 * n, kHeaderBytes + 4 * n);
  read_at(idx_fd.fd, idx_path, ds.doc_idx_.data(), 8 * d, kHeaderBytes + 12 * n);

  // ---- doc_idx: 0, non-decreasing, ending at the item count.
  if (d == 0)
    throw Error(idx_path +
                ": the document index is empty; it must hold at least [0] "
                "(the start of the first document and the item count)");
  if (ds.doc_idx_[0] != 0)
    throw Error(idx_path + ": the document index must start at 0, but doc_idx[0] = " + std::to_string(ds.doc_idx_[0]));
  for (std::uint64_t i = 1; i < d; ++i)
    if (ds.doc_idx_[i] < ds.doc_idx_[i - 1])
      throw Error(idx_path + ": the document index is not non-decreasing: doc_idx[" + std::to_string(i) +
                  "] = " + std::to_string(ds.doc_idx_[i]) + " < doc_idx[" + std::to_string(i - 1) +
                  "] = " + std::to_string(ds.doc_idx_[i - 1]));
  if (static_cast<std::uint64_t>(ds.doc_idx_.back()) != n)
    throw Error(idx_path + ": the document index ends at " + std::to_string(ds.doc_idx_.back()) +
                " but must end at the item count " + std::to_string(n));

  // ---- .bin: every item lies inside the file.
  int fd = ::open(bin_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(bin_path + ": cannot open: " + errno_str(errno) + hint);
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    throw Error(bin_path + ": cannot stat: " + errno_str(err));
  }
  auto mapping = std::make_shared<Mapping>();
  mapping->size = static_cast<std::size_t>(st.st_size);
  if (mapping->size > 0) {
    void* addr = ::mmap(nullptr, mapping->size, PROT_READ, MAP_SHARED, fd, 0);
    int err = errno;
    ::close(fd);
    if (addr == MAP_FAILED) {
      mapping->size = 0;
      throw Error(bin_path + ": cannot mmap: " + errno_str(err));
    }
    mapping->data = static_cast<const unsigned char*>(addr);
  } else {
    ::close(fd);
  }
  ds.bin_ = mapping;

  const std::uint64_t bin_size = mapping->size;
  const std::uint64_t item_bytes = dtype_size(ds.dtype_);
  std::int64_t total = 0;
  for (std::uint64_t i = 0; i < n; ++i) {
    const std::int32_t size = ds.sizes_[i];
    const std::int64_t ptr = ds.pointers_[i];
    if (size < 0)
      throw Error(idx_path + ": item " + std::to_string(i) + " has a negative size (" + std::to_string(size) +
                  " tokens)");
    if (ptr < 0)
      throw Error(idx_path + ": item " + std::to_string(i) + " has a negative pointer (" + std::to_string(ptr) + ")");
    const std::uint64_t end = static_cast<std::uint64_t>(ptr) + item_bytes * static_cast<std::uint64_t>(size);
    if (static_cast<std::uint64_t>(ptr) > bin_size || end > bin_size)
      throw Error(bin_path + ": item " + std::to_string(i) + " (" + std::to_string(size) + " tokens at byte " +
                  std::to_string(ptr) + ") ends at byte " + std::to_string(end) + ", past the end of the file (" +
                  std::to_string(bin_size) + " bytes): the .bin is truncated or does not belong to " + idx_path);
    total += size;
  }
  ds.num_tokens_ = total;
  return ds;
}

void IndexedDataset::read(std::int64_t item, std::int64_t offset, std::int64_t count, std::int32_t* out) const {
  if (item < 0 || item >= num_items())
    throw Error(prefix_ + ": item " + std::to_string(item) + " is out of range (" + std::to_string(num_items()) +
                " items)");
  const std::int64_t size = sizes_[static_cast<std::size_t>(item)];
  if (offset < 0 || count < 0 || offset > size || count > size - offset)
    throw Error(prefix_ + ": tokens [" + std::to_string(offset) + ", " + std::to_string(offset + count) +
                ") are out of range for item " + std::to_string(item) + " of " + std::to_string(size) + " tokens");
  const unsigned char* base = bin_->data + pointers_[static_cast<std::size_t>(item)];
  if (dtype_ == DType::u16) {
    for (std::int64_t i = 0; i < count; ++i) out[i] = load<std::uint16_t>(base + 2 * (offset + i));
  } else if (count > 0) {
    std::memcpy(out, base + 4 * offset, static_cast<std::size_t>(count) * 4);
  }
}

std::int64_t IndexedDataset::max_token() const {
  if (max_token_ >= 0) return max_token_;
  const unsigned char* data = bin_->data;
  std::int64_t best = -1;
  if (dtype_ == DType::u16) {
    const std::size_t count = bin_->size / 2;
    std::uint16_t m = 0;
    for (std::size_t i = 0; i < count; ++i) m = std::max(m, load<std::uint16_t>(data + 2 * i));
    if (count) best = m;
  } else {
    const std::size_t count = bin_->size / 4;
    std::int32_t m = std::numeric_limits<std::int32_t>::min();
    for (std::size_t i = 0; i < count; ++i) m = std::max(m, load<std::int32_t>(data + 4 * i));
    if (count) best = std::max<std::int64_t>(m, 0);
  }
  max_token_ = std::max<std::int64_t>(best, 0);
  return max_token_;
}

// ---------------------------------------------------------------- writer

struct IndexedDatasetWriter::Impl {
  std::string prefix;
  DType dtype;
  std::string bin_tmp, idx_tmp;
  std::FILE* bin = nullptr;
  std::vector<std::int32_t> sizes;
  std::vector<std::int64_t> doc_idx{0};
  std::vector<unsigned char> buffer;
  bool finished = false;
  std::int64_t bin_bytes = 0;    // bytes written to .bin
  bool item_open = false;        // add_to_item() started an item not yet closed
  std::int64_t item_tokens = 0;  // its tokens so far
  std::int64_t item_start = 0;   // its byte offset in .bin

  // Writes `count` tokens to .bin; `first` is the position of tokens[0] in its item (for messages).
  void write_tokens(const std::int32_t* tokens, std::int64_t count, std::int64_t first) {
    const std::size_t bytes = static_cast<std::size_t>(count) * dtype_size(dtype);
    buffer.resize(bytes);
    if (dtype == DType::u16) {
      for (std::int64_t i = 0; i < count; ++i) {
        const std::int32_t t = tokens[i];
        if (t < 0 || t > 0xffff)
          throw Error(prefix + ": token " + std::to_string(t) + " (item " + std::to_string(sizes.size()) +
                      ", position " + std::to_string(first + i) +
                      ") does not fit uint16; write int32 tokens for vocabularies of 65500 or more");
        const std::uint16_t v = static_cast<std::uint16_t>(t);
        std::memcpy(buffer.data() + 2 * i, &v, 2);
      }
    } else if (bytes) {
      std::memcpy(buffer.data(), tokens, bytes);
    }
    errno = 0;
    if (bytes && std::fwrite(buffer.data(), 1, bytes, bin) != bytes) fail(bin_tmp, "write failed");
    bin_bytes += static_cast<std::int64_t>(bytes);
  }
  void close_item() {
    if (!item_open) return;
    sizes.push_back(static_cast<std::int32_t>(item_tokens));
    item_open = false;
    item_tokens = 0;
  }

  void fail(const std::string& path, const std::string& what) {
    int err = errno;
    throw Error(path + ": " + what + (err ? ": " + errno_str(err) : std::string()));
  }
  void cleanup() {
    if (bin) std::fclose(bin);
    bin = nullptr;
    std::remove(bin_tmp.c_str());
    std::remove(idx_tmp.c_str());
  }
};

IndexedDatasetWriter::IndexedDatasetWriter(const std::string& prefix, DType dtype) : impl_(std::make_unique<Impl>()) {
  if (dtype != DType::u16 && dtype != DType::i32)
    throw Error(prefix + ": indexed datasets hold u16 or i32 tokens, not " + std::string(dtype_name(dtype)));
  impl_->prefix = prefix;
  impl_->dtype = dtype;
  const std::string tag = ".tmp." + std::to_string(::getpid());
  impl_->bin_tmp = prefix + ".bin" + tag;
  impl_->idx_tmp = prefix + ".idx" + tag;
  impl_->bin = std::fopen(impl_->bin_tmp.c_str(), "wb");
  if (!impl_->bin) impl_->fail(impl_->bin_tmp, "cannot create");
}

IndexedDatasetWriter::~IndexedDatasetWriter() {
  if (impl_ && !impl_->finished) impl_->cleanup();
}

void IndexedDatasetWriter::add_item(const std::int32_t* tokens, std::int64_t count) {
  Impl& w = *impl_;
  if (w.finished) throw Error(w.prefix + ": add_item after finish()");
  if (w.item_open) throw Error(w.prefix + ": add_item while an item is being built (call end_item() first)");
  if (count < 0 || count > std::numeric_limits<std::int32_t>::max())
    throw Error(w.prefix + ": item of " + std::to_string(count) + " tokens: the size must be in [0, 2^31)");
  w.write_tokens(tokens, count, 0);
  w.sizes.push_back(static_cast<std::int32_t>(count));
}

void IndexedDatasetWriter::add_to_item(const std::int32_t* tokens, std::int64_t count) {
  Impl& w = *impl_;
  if (w.finished) throw Error(w.prefix + ": add_to_item after finish()");
  if (count < 0 || count > std::numeric_limits<std::int32_t>::max() - w.item_tokens)
    throw Error(w.prefix + ": item of " + std::to_string(w.item_tokens + std::max<std::int64_t>(count, 0)) +
                " tokens or more: the size must be in [0, 2^31)");
  if (!w.item_open) {
    w.item_open = true;
    w.item_tokens = 0;
    w.item_start = w.bin_bytes;
  }
  w.write_tokens(tokens, count, w.item_tokens);
  w.item_tokens += count;
}

void IndexedDatasetWriter::end_item() {
  Impl& w = *impl_;
  if (w.finished) throw Error(w.prefix + ": end_item after finish()");
  w.item_open = true;  // an item of 0 tokens when none was started
  w.close_item();
}

void IndexedDatasetWriter::discard_item() {
  Impl& w = *impl_;
  if (w.finished) throw Error(w.prefix + ": discard_item after finish()");
  if (!w.item_open) return;
  errno = 0;
  if (std::fflush(w.bin) != 0 || ::ftruncate(::fileno(w.bin), static_cast<off_t>(w.item_start)) != 0 ||
      ::fseeko(w.bin, static_cast<off_t>(w.item_start), SEEK_SET) != 0)
    w.fail(w.bin_tmp, "cannot drop the last item");
  w.bin_bytes = w.item_start;
  w.item_open = false;
  w.item_tokens = 0;
}

void IndexedDatasetWriter::end_document() {
  Impl& w = *impl_;
  if (w.finished) throw Error(w.prefix + ": end_document after finish()");
  w.close_item();
  w.doc_idx.push_back(static_cast<std::int64_t>(w.sizes.size()));
}

void IndexedDatasetWriter::finish() {
  Impl& w = *impl_;
  if (w.finished) throw Error(w.prefix + ": finish() called twice");
  try {
    w.close_item();
    // Items added after the last end_document() form a final document, so
    // the index always ends at the item count (GPT-NeoX's reader needs that
    // for its document list; preprocess_data.py always closes documents).
    if (w.doc_idx.back() != static_cast<std::int64_t>(w.sizes.size()))
      w.doc_idx.push_back(static_cast<std::int64_t>(w.sizes.size()));
    errno = 0;
    if (std::fflush(w.bin) != 0 || ::fsync(::fileno(w.bin)) != 0) w.fail(w.bin_tmp, "write failed");
    int rc = std::fclose(w.bin);
    w.bin = nullptr;
    if (rc != 0) w.fail(w.bin_tmp, "close failed");

    const std::uint64_t n = w.sizes.size();
    const std::uint64_t d = w.doc_idx.size();
    std::vector<unsigned char> idx(kHeaderBytes + 12 * n + 8 * d);
    unsigned char* p = idx.data();
    std::memcpy(p, kMagic, 9);
    const std::uint64_t version = 1;
    std::memcpy(p + 9, &version, 8);
    p[17] = w.dtype == DType::u16 ? kCodeUInt16 : kCodeInt32;
    std::memcpy(p + 18, &n, 8);
    std::memcpy(p + 26, &d, 8);
    p += kHeaderBytes;
    if (n) std::memcpy(p, w.sizes.data(), 4 * n);
    // Pointers: byte offset of each item, the running sum of item bytes.
    std::int64_t offset = 0;
    for (std::uint64_t i = 0; i < n; ++i) {
      std::memcpy(p + 4 * n + 8 * i, &offset, 8);
      offset += static_cast<std::int64_t>(w.sizes[i]) * static_cast<std::int64_t>(dtype_size(w.dtype));
    }
    std::memcpy(p + 12 * n, w.doc_idx.data(), 8 * d);

    errno = 0;
    std::FILE* f = std::fopen(w.idx_tmp.c_str(), "wb");
    if (!f) w.fail(w.idx_tmp, "cannot create");
    const bool ok =
        std::fwrite(idx.data(), 1, idx.size(), f) == idx.size() && std::fflush(f) == 0 && ::fsync(::fileno(f)) == 0;
    rc = std::fclose(f);
    if (!ok || rc != 0) w.fail(w.idx_tmp, "write failed");

    const std::string bin_path = w.prefix + ".bin";
    const std::string idx_path = w.prefix + ".idx";
    errno = 0;
    if (std::rename(w.bin_tmp.c_str(), bin_path.c_str()) != 0)
      w.fail(bin_path, "cannot rename " + w.bin_tmp + " to it");
    if (std::rename(w.idx_tmp.c_str(), idx_path.c_str()) != 0)
      w.fail(idx_path, "cannot rename " + w.idx_tmp + " to it");
    w.finished = true;
  } catch (...) {
    w.cleanup();
    w.finished = true;
    throw;
  }
}

}  // namespace neox
