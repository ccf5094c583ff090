// SPDX-License-Identifier: Apache-2.0
// Backend: memory on one device plus the kernel table that runs there.
//
// Made by a `backend` plugin's factory. The object is owned by the core
// (through the registry, which keeps the plugin loaded while it lives).
// Methods throw neox::Error; allocate() names the size it could not get.
// A backend is used by one thread at a time unless it documents otherwise.
#pragma once

#include <cstddef>
#include <string>

#include "neox/kernels.h"
#include "neox/tensor.h"
#include "neox/export.h"

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
  virtual void copy(void* dst, Device dst_device, const void* src, Device src_device,
                    std::size_t bytes) = 0;
  // Waits until all queued work has finished.
  virtual void synchronize() = 0;
  // Fills every operation this backend implements.
  virtual void register_kernels(Kernels& table) = 0;

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
