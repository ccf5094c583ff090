// SPDX-License-Identifier: Apache-2.0
// CachingAllocator: device memory for one backend, over cudaMalloc.
//
// Sizes are rounded (to 512 bytes below 1 MiB, to 2 MiB multiples above),
// and a freed block goes to a free list keyed by its size instead of back to
// the driver. An allocation takes the smallest cached block that fits and is
// at most twice the rounded size (best fit, blocks are not split); otherwise
// it calls cudaMalloc. When cudaMalloc runs out of memory, the cache is
// returned to the driver and the call retried once; a second failure throws
// neox::Error naming the size and the in-use and reserved totals.
//
// Reuse is safe without events because every kernel and copy of the backend
// runs on its one stream: work that uses a block after it is handed out again
// is queued behind the work that used it before. Before cached blocks are
// given back to the driver the stream is synchronised.
//
// Statistics: in_use and peak_in_use count the bytes asked for (as the cpu
// backend does), reserved the bytes obtained from cudaMalloc (rounded blocks,
// cached ones included). Internal buffers (cuBLASLt workspace, scratch,
// cached tables) come from the same allocator and are counted too.
//
// Thread-safe (a mutex): buffers may be freed from any thread.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <map>
#include <mutex>
#include <unordered_map>

namespace neox::cuda {

class CachingAllocator {
 public:
  struct Stats {
    std::size_t in_use = 0;       // bytes handed out (as requested, not rounded)
    std::size_t peak_in_use = 0;  // most in_use since construction or reset_peak()
    std::size_t reserved = 0;     // bytes obtained from cudaMalloc and not yet freed
  };

  CachingAllocator(int device, cudaStream_t stream) : device_(device), stream_(stream) {}
  ~CachingAllocator();  // cudaFree of every block, errors ignored
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  // Never null; throws neox::Error. The device must be current.
  void* allocate(std::size_t bytes);
  // Null and unknown pointers are ignored.
  void deallocate(void* ptr) noexcept;
  Stats stats() const;
  void reset_peak();
  // Synchronises the stream and gives every cached (free) block back to the driver.
  void release_cached();
  // Forgets every block without calling the runtime (when it is already shut
  // down at process exit); the destructor then frees nothing.
  void abandon() noexcept;

  // The size a request of `bytes` is rounded to; 0 when it would overflow.
  static std::size_t round_size(std::size_t bytes);

 private:
  void release_cached_locked();
  int device_;
  cudaStream_t stream_;
  mutable std::mutex mutex_;
  std::multimap<std::size_t, void*> free_;  // size -> block
  struct Used {
    std::size_t block;      // the block's (rounded) size
    std::size_t requested;  // what allocate() was asked for
  };
  std::unordered_map<void*, Used> used_;  // block handed out -> sizes
  Stats stats_;
};

// A block of device memory returned to the allocator when destroyed. Move-only.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(CachingAllocator* alloc, std::size_t bytes)
      : alloc_(alloc), ptr_(alloc->allocate(bytes)), bytes_(bytes) {}
  ~DeviceBuffer() { reset(); }
  DeviceBuffer(DeviceBuffer&& o) noexcept : alloc_(o.alloc_), ptr_(o.ptr_), bytes_(o.bytes_) {
    o.alloc_ = nullptr;
    o.ptr_ = nullptr;
    o.bytes_ = 0;
  }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      alloc_ = o.alloc_;
      ptr_ = o.ptr_;
      bytes_ = o.bytes_;
      o.alloc_ = nullptr;
      o.ptr_ = nullptr;
      o.bytes_ = 0;
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void reset() noexcept {
    if (alloc_ && ptr_) alloc_->deallocate(ptr_);
    alloc_ = nullptr;
    ptr_ = nullptr;
    bytes_ = 0;
  }
  void* get() const { return ptr_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  std::size_t bytes() const { return bytes_; }

 private:
  CachingAllocator* alloc_ = nullptr;
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
};

}  // namespace neox::cuda
