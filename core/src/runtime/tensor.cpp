// SPDX-License-Identifier: Apache-2.0
#include "neox/tensor.h"

#include <cstdlib>
#include <cstring>
#include <new>

#include "neox/backend.h"
#include "neox/error.h"

namespace neox {

std::int64_t numel(const Shape& s) {
  std::int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(s[i]);
  }
  return out + "]";
}

Buffer::Buffer(Backend* backend, std::size_t bytes) : backend_(backend), data_(nullptr), bytes_(bytes) {
  if (backend_) {
    data_ = backend_->allocate(bytes);
  } else {
    data_ = ::operator new(bytes == 0 ? 1 : bytes, std::align_val_t(64));
  }
}

Buffer::~Buffer() {
  if (backend_)
    backend_->deallocate(data_, bytes_);
  else
    ::operator delete(data_, std::align_val_t(64));
}

Device Buffer::device() const { return backend_ ? backend_->device() : Device{}; }

static void check_shape(const Shape& shape) {
  for (auto d : shape)
    if (d < 0) throw Error("tensor shape " + shape_str(shape) + " has a negative dimension");
}

Tensor Tensor::empty(Backend* backend, Shape shape, DType dtype) {
  check_shape(shape);
  Tensor t;
  t.numel_ = neox::numel(shape);
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  t.owner_ = std::make_shared<Buffer>(backend, t.bytes());
  t.data_ = t.owner_->data();
  t.device_ = t.owner_->device();
  return t;
}

Tensor Tensor::zeros_host(Shape shape, DType dtype) {
  Tensor t = empty(nullptr, std::move(shape), dtype);
  std::memset(t.data_, 0, t.bytes());
  return t;
}

Tensor Tensor::wrap(void* data, Shape shape, DType dtype, Device device) {
  check_shape(shape);
  Tensor t;
  t.data_ = data;
  t.numel_ = neox::numel(shape);
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  t.device_ = device;
  return t;
}

Tensor Tensor::wrap_shared(void* data, Shape shape, DType dtype, std::shared_ptr<const void> owner, Device device) {
  Tensor t = wrap(data, std::move(shape), dtype, device);
  // Aliasing constructor: shares ownership of `owner` without a Buffer.
  t.owner_ = std::shared_ptr<Buffer>(std::move(owner), nullptr);
  return t;
}

std::int64_t Tensor::dim(int i) const {
  int n = ndim();
  int j = i < 0 ? n + i : i;
  if (j < 0 || j >= n) throw Error("dimension " + std::to_string(i) + " out of range for " + str());
  return shape_[static_cast<std::size_t>(j)];
}

Tensor Tensor::view(Shape shape) const {
  check_shape(shape);
  if (neox::numel(shape) != numel_)
    throw Error("cannot view " + str() + " as " + shape_str(shape) + ": element counts differ");
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::slice(std::int64_t offset, std::int64_t count) const {
  if (offset < 0 || count < 0 || offset + count > numel_)
    throw Error("slice [" + std::to_string(offset) + ", " + std::to_string(offset + count) + ") out of range for " +
                str());
  Tensor t = *this;
  t.data_ = static_cast<char*>(data_) + offset * static_cast<std::int64_t>(dtype_size(dtype_));
  t.shape_ = {count};
  t.numel_ = count;
  return t;
}

Tensor Tensor::rows(std::int64_t begin, std::int64_t end) const {
  if (shape_.empty()) throw Error("rows() of a scalar tensor " + str());
  if (begin < 0 || end < begin || end > shape_[0])
    throw Error("rows [" + std::to_string(begin) + ", " + std::to_string(end) + ") out of range for " + str());
  std::int64_t row = shape_[0] ? numel_ / shape_[0] : 0;
  Tensor t = slice(begin * row, (end - begin) * row);
  Shape s = shape_;
  s[0] = end - begin;
  t.shape_ = s;
  return t;
}

std::string Tensor::str() const {
  return std::string(dtype_name(dtype_)) + shape_str(shape_) + " on " + device_name(device_);
}

void expect_tensor(const Tensor& t, DType dtype, const Shape& shape, const std::string& what) {
  if (t.dtype() != dtype || t.shape() != shape)
    throw Error(what + ": expected " + std::string(dtype_name(dtype)) + shape_str(shape) + ", got " + t.str());
}

}  // namespace neox
