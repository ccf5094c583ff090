// SPDX-License-Identifier: Apache-2.0
#include "neox/backend.h"

#include "neox/error.h"

namespace neox {

Tensor Backend::to_device(const Tensor& host) {
  Tensor t = Tensor::empty(this, host.shape(), host.dtype());
  copy(t.data(), t.device(), host.data(), host.device(), host.bytes());
  return t;
}

Tensor Backend::to_host(const Tensor& src) {
  Tensor t = Tensor::empty(nullptr, src.shape(), src.dtype());
  copy(t.data(), t.device(), src.data(), src.device(), src.bytes());
  return t;
}

void Backend::copy_tensor(Tensor& dst, const Tensor& src) {
  if (dst.bytes() != src.bytes())
    throw Error("copy_tensor: " + src.str() + " does not fit " + dst.str());
  copy(dst.data(), dst.device(), src.data(), src.device(), src.bytes());
}

}  // namespace neox
