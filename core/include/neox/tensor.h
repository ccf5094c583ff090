// SPDX-License-Identifier: Apache-2.0
// Tensor: a typed, shaped view of contiguous memory on one device.
//
// A Tensor does not know how its memory was allocated. It optionally shares
// ownership of a Buffer (Tensor::empty, views of an arena); a Tensor made with
// Tensor::wrap borrows memory that the caller keeps alive. Copying a Tensor
// copies the view, never the data. All tensors are contiguous, row-major.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "neox/dtype.h"

namespace neox {

class Backend;

using Shape = std::vector<std::int64_t>;

std::int64_t numel(const Shape& s);
std::string shape_str(const Shape& s);  // "[2, 16, 512]"

// Memory allocated by a Backend; freed through it when the last owner goes.
class Buffer {
 public:
  Buffer(Backend* backend, std::size_t bytes);
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  void* data() const { return data_; }
  std::size_t bytes() const { return bytes_; }
  Device device() const;

 private:
  Backend* backend_;  // may be null: host memory from operator new
  void* data_;
  std::size_t bytes_;
};

class Tensor {
 public:
  Tensor() = default;

  // Fresh, uninitialised memory from `backend` (or host memory if null).
  static Tensor empty(Backend* backend, Shape shape, DType dtype);
  // Host tensors (plain heap memory), zero-filled.
  static Tensor zeros_host(Shape shape, DType dtype);
  // Borrowed memory: the caller keeps `data` alive as long as the view.
  static Tensor wrap(void* data, Shape shape, DType dtype, Device device = {});
  // Memory kept alive by `owner` (e.g. a file mapping): the tensor and every
  // view of it share ownership of `owner`.
  static Tensor wrap_shared(void* data, Shape shape, DType dtype, std::shared_ptr<const void> owner,
                            Device device = {});

  bool defined() const { return data_ != nullptr; }
  void* data() const { return data_; }
  template <typename T>
  T* ptr() const {
    return static_cast<T*>(data_);
  }
  const Shape& shape() const { return shape_; }
  std::int64_t dim(int i) const;  // negative i counts from the end
  int ndim() const { return static_cast<int>(shape_.size()); }
  std::int64_t numel() const { return numel_; }
  std::size_t bytes() const { return static_cast<std::size_t>(numel_) * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }

  // The same memory with another shape of equal numel.
  Tensor view(Shape shape) const;
  // Elements [offset, offset+count) of the flattened tensor, as 1-D.
  Tensor slice(std::int64_t offset, std::int64_t count) const;
  // Rows [begin, end) along dimension 0.
  Tensor rows(std::int64_t begin, std::int64_t end) const;

  // "f32[2, 16, 512] on cpu"
  std::string str() const;

 private:
  // Keeps the memory alive; for wrap_shared it owns another object and
  // points at no Buffer (get() is null).
  std::shared_ptr<Buffer> owner_;
  void* data_ = nullptr;
  Shape shape_;
  std::int64_t numel_ = 0;
  DType dtype_ = DType::f32;
  Device device_{};
};

// Throws neox::Error "<what>: expected <dtype><shape>, got <t.str()>" unless
// t has exactly that dtype and shape.
void expect_tensor(const Tensor& t, DType dtype, const Shape& shape, const std::string& what);

}  // namespace neox
