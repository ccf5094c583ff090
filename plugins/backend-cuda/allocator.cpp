// SPDX-License-Identifier: Apache-2.0
#include "allocator.h"

#include <algorithm>
#include <cstdio>
#include <limits>
#include <string>

#include "cuda_check.h"
#include "neox/error.h"

namespace neox::cuda {
namespace {

constexpr std::size_t kSmallRound = 512;
constexpr std::size_t kLargeThreshold = std::size_t{1} << 20;  // 1 MiB
constexpr std::size_t kLargeRound = std::size_t{2} << 20;      // 2 MiB

std::string gib(std::size_t bytes) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3f GiB", static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0));
  return buf;
}

std::string bytes_str(std::size_t bytes) { return std::to_string(bytes) + " bytes (" + gib(bytes) + ")"; }

}  // namespace

std::size_t CachingAllocator::round_size(std::size_t bytes) {
  if (bytes == 0) return kSmallRound;
  const std::size_t unit = bytes < kLargeThreshold ? kSmallRound : kLargeRound;
  if (bytes > std::numeric_limits<std::size_t>::max() - unit) return 0;
  return (bytes + unit - 1) / unit * unit;
}

CachingAllocator::~CachingAllocator() {
  // The owner synchronised the stream; errors (e.g. a context already torn
  // down at process exit) are ignored: a destructor must not throw.
  for (auto& [size, ptr] : free_) (void)cudaFree(ptr);
  for (auto& [ptr, sizes] : used_) (void)cudaFree(ptr);
  free_.clear();
  used_.clear();
}

void* CachingAllocator::allocate(std::size_t bytes) {
  const std::size_t size = round_size(bytes);
  std::lock_guard<std::mutex> lock(mutex_);
  if (size == 0)
    throw Error("cuda backend: cannot allocate " + std::to_string(bytes) + " bytes on cuda:" + std::to_string(device_) +
                " (the size overflows)");
  // Best fit among cached blocks of at most twice the size.
  auto it = free_.lower_bound(size);
  if (it != free_.end() && it->first / 2 <= size) {
    void* ptr = it->second;
    const std::size_t block = it->first;
    used_.emplace(ptr, Used{block, bytes});  // may throw: before the block leaves the free list
    free_.erase(it);
    stats_.in_use += bytes;
    stats_.peak_in_use = std::max(stats_.peak_in_use, stats_.in_use);
    return ptr;
  }
  void* ptr = nullptr;
  cudaError_t err = cudaMalloc(&ptr, size);
  if (err == cudaErrorMemoryAllocation && !free_.empty()) {
    (void)cudaGetLastError();  // clear the (non-sticky) error
    release_cached_locked();
    ptr = nullptr;
    err = cudaMalloc(&ptr, size);
  }
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    std::string msg = "cuda backend: ";
    msg += err == cudaErrorMemoryAllocation ? "out of memory on cuda:" : "cannot allocate on cuda:";
    msg += std::to_string(device_);
    msg += " allocating " + bytes_str(bytes);
    msg += "; in use " + bytes_str(stats_.in_use) + ", reserved " + bytes_str(stats_.reserved);
    msg += " (cudaMalloc of " + std::to_string(size) + " bytes failed: ";
    msg += cudaGetErrorName(err);
    msg += ": ";
    msg += cudaGetErrorString(err);
    msg += ")";
    throw Error(msg);
  }
  try {
    used_.emplace(ptr, Used{size, bytes});
  } catch (...) {
    (void)cudaFree(ptr);
    throw;
  }
  stats_.reserved += size;
  stats_.in_use += bytes;
  stats_.peak_in_use = std::max(stats_.peak_in_use, stats_.in_use);
  return ptr;
}

void CachingAllocator::deallocate(void* ptr) noexcept {
  if (!ptr) return;
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = used_.find(ptr);
  if (it == used_.end()) return;
  const std::size_t size = it->second.block;
  stats_.in_use -= it->second.requested;
  used_.erase(it);
  try {
    // Before the other cached blocks of its size: the next request of that
    // size takes the block freed last (still warm in L2).
    free_.emplace_hint(free_.lower_bound(size), size, ptr);
  } catch (...) {  // no memory for the list node: give the block back instead
    if (cudaFree(ptr) == cudaSuccess) stats_.reserved -= size;
  }
}

CachingAllocator::Stats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void CachingAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.peak_in_use = stats_.in_use;
}

void CachingAllocator::abandon() noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  free_.clear();
  used_.clear();
  stats_ = Stats{};
}

void CachingAllocator::release_cached() {
  std::lock_guard<std::mutex> lock(mutex_);
  release_cached_locked();
}

void CachingAllocator::release_cached_locked() {
  if (free_.empty()) return;
  // Work queued on the stream may still use a cached block (it was freed by
  // the host after its last use was queued): wait for it first.
  NEOX_CUDA_CHECK(cudaStreamSynchronize(stream_));
  while (!free_.empty()) {
    auto it = free_.begin();
    NEOX_CUDA_CHECK(cudaFree(it->second));
    stats_.reserved -= it->first;
    free_.erase(it);
  }
}

}  // namespace neox::cuda
