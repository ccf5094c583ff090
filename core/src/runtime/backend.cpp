// SPDX-License-Identifier: Apache-2.0
#include "neox/backend.h"

#include <chrono>

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
  if (dst.bytes() != src.bytes()) throw Error("copy_tensor: " + src.str() + " does not fit " + dst.str());
  copy(dst.data(), dst.device(), src.data(), src.device(), src.bytes());
}

}  // namespace neox

namespace neox {

std::vector<double> Backend::time_runs(const std::function<void()>& fn, int warmup, int runs) {
  for (int i = 0; i < warmup; ++i) fn();
  synchronize();
  std::vector<double> ms;
  ms.reserve(static_cast<std::size_t>(runs > 0 ? runs : 0));
  for (int i = 0; i < runs; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    synchronize();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return ms;
}

}  // namespace neox
