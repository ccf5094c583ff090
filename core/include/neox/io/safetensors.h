// SPDX-License-Identifier: Apache-2.0
// safetensors files: a validating, memory-mapped reader and an atomic writer.
//
// Format: 8-byte little-endian header length N, N bytes of JSON
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]},
//  "__metadata__": {"k": "v"}}, then the data; offsets are relative to the
// end of the header. The reader checks everything before handing out a view
// (header length within the file and below 100 MB, valid JSON object, known
// dtype, shape x dtype size == end - begin, offsets in order, contiguous,
// non-overlapping, covering the data exactly) and throws neox::Error naming
// the file and the problem; it never reads outside the file.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "neox/export.h"
#include "neox/tensor.h"

namespace neox {

struct SafeTensorInfo {
  std::string name;
  DType dtype{};
  Shape shape;
  std::uint64_t begin = 0;  // byte offsets relative to the data section
  std::uint64_t end = 0;
};

class NEOX_API SafeTensorsFile {
 public:
  // Maps and validates the file; throws neox::Error naming it and the problem.
  static SafeTensorsFile open(const std::string& path);

  const std::string& path() const { return path_; }
  // In file order (by offset).
  const std::vector<SafeTensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool contains(const std::string& name) const;
  // Throws neox::Error naming the file and the tensor when absent.
  const SafeTensorInfo& info(const std::string& name) const;
  // A host view of the stored bytes (keeps the mapping alive).
  Tensor view(const std::string& name) const;
  // A host copy converted to `dtype` (floats to floats, ints to ints).
  Tensor read(const std::string& name, DType dtype) const;

 private:
  struct Mapping;
  std::string path_;
  std::shared_ptr<Mapping> mapping_;
  std::vector<SafeTensorInfo> tensors_;
  std::map<std::string, std::size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// A safetensors file written one tensor at a time, so that a file larger
// than the memory meant for it (a whole model saved by ranks that each hold a
// part) never exists in memory at once. The constructor validates the layout
// (names, dtypes, shapes: the header) and writes the header into a temporary
// file in the same directory; write() appends the tensors in layout order;
// finish() syncs the file and renames it to `path`. A writer destroyed before
// finish() (an error on the way) removes its temporary file, leaving any
// previous file at `path` untouched. Errors throw neox::Error naming the file.
class NEOX_API SafeTensorsWriter {
 public:
  struct Entry {
    std::string name;
    DType dtype{};
    Shape shape;
  };
  SafeTensorsWriter(const std::string& path, std::vector<Entry> layout,
                    const std::map<std::string, std::string>& metadata = {});
  ~SafeTensorsWriter();
  SafeTensorsWriter(SafeTensorsWriter&&) noexcept;
  SafeTensorsWriter& operator=(SafeTensorsWriter&&) noexcept;
  SafeTensorsWriter(const SafeTensorsWriter&) = delete;
  SafeTensorsWriter& operator=(const SafeTensorsWriter&) = delete;

  const std::string& path() const;
  // The next tensor of the layout: same name, dtype and shape; on the host.
  void write(const std::string& name, const Tensor& tensor);
  // Every tensor written: makes the file appear at path(), durably.
  void finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Writes host tensors in the given order to `path` (via a temporary file in
// the same directory, renamed into place). Throws on I/O errors, leaving any
// previous file at `path` untouched.
NEOX_API void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                                const std::map<std::string, std::string>& metadata = {});

// Converts n elements between dtypes on the host (f64/f32/f16/bf16 among
// themselves, i64/i32/u16 among themselves); throws for other pairs.
NEOX_API void convert_host(void* dst, DType dst_dtype, const void* src, DType src_dtype, std::int64_t n);

}  // namespace neox
