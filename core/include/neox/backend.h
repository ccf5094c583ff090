// SPDX-License-Identifier: Apache-2.0
// Backend: memory on one device plus the kernel table that runs there.
//
// Made by a `backend` plugin's factory. The object is owned by the core
// (through the registry, which keeps the plugin loaded while it lives).
// Methods throw neox::Error; allocate() names the size it could not get.
// A backend is used by one thread at a time unless it documents otherwise.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "neox/export.h"
#include "neox/kernels.h"
#include "neox/tensor.h"

namespace neox {

class NEOX_API Backend {
 public:
  virtual ~Backend() = default;

  virtual std::string name() const = 0;
  virtual Device device() const = 0;

  // At least 64-byte aligned; never returns null (throws instead).
  virtual void* allocate(std::size_t bytes) = 0;
  virtual void deallocate(void* ptr, std::size_t bytes) noexcept = 0;
  // Copies bytes between host memory and this device, or within either.
  virtual void copy(void* dst, Device dst_device, const void* src, Device src_device, std::size_t bytes) = 0;
  // Waits until all queued work has finished.
  virtual void synchronize() = 0;
  // Fills every operation this backend implements.
  virtual void register_kernels(Kernels& table) = 0;

  // Memory the backend has handed out through allocate(), now and at most
  // since the last reset_peak_memory(); `reserved` is what it holds from
  // the system (a caching allocator keeps freed blocks). Backends that do
  // not count return zeros.
  struct MemoryStats {
    std::size_t in_use = 0;
    std::size_t peak_in_use = 0;
    std::size_t reserved = 0;
  };
  virtual MemoryStats memory_stats() const { return {}; }
  virtual void reset_peak_memory() {}

  // The native queue the backend's kernels run on, for kernels plugins that
  // launch their own work in order with the backend's (a cudaStream_t for
  // the cuda backend); null for backends that run on the calling thread.
  virtual void* native_stream() { return nullptr; }

  // Runs fn `warmup` times, then `runs` times, and returns the device time
  // of each of the timed runs in milliseconds. The default synchronises
  // around each run and reads the host clock; a GPU backend times with
  // events on its stream, so launch gaps between runs are not counted.
  virtual std::vector<double> time_runs(const std::function<void()>& fn, int warmup, int runs);

  // The table in use: the backend's own kernels with the manifest's
  // overrides applied (see PluginRegistry::make_backend). Public so that
  // layers call backend.kernels.matmul(...) without indirection.
  Kernels kernels;

  // Host <-> device helpers built on copy().
  Tensor to_device(const Tensor& host);
  Tensor to_host(const Tensor& t);
  void copy_tensor(Tensor& dst, const Tensor& src);  // equal bytes
};

// A plugin that provides some kernels for another backend's device.
class NEOX_API KernelProvider {
 public:
  virtual ~KernelProvider() = default;
  virtual DeviceType device() const = 0;
  // Called once with the backend whose table receives the overrides, before
  // register_kernels, so a provider can use its streams or handles.
  virtual void attach(Backend& /*backend*/) {}
  // Sets only the operations this provider implements.
  virtual void register_kernels(Kernels& table) = 0;
};

}  // namespace neox
