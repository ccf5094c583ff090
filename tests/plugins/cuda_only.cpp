// SPDX-License-Identifier: Apache-2.0
// Test plugin: a kernels provider for CUDA devices, used to check that the
// registry refuses to mix it into a CPU backend. Its kernel never runs.
#include "neox/backend.h"
#include "neox/error.h"
#include "neox/plugin.h"

namespace {

class CudaOnly final : public neox::KernelProvider {
 public:
  neox::DeviceType device() const override { return neox::DeviceType::cuda; }
  void register_kernels(neox::Kernels& table) override {
    table.gelu_forward = [](neox::Tensor&, const neox::Tensor&) {
      throw neox::Error("gelu_forward (test-cuda-only): must never run");
    };
  }
};

neox::KernelProvider* make(const neox::Options&) { return new CudaOnly(); }

}  // namespace

NEOX_PLUGIN(kernels, "test-cuda-only", "0.0", "test: a kernels provider for another device", &make)
