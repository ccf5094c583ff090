// SPDX-License-Identifier: Apache-2.0
// Test plugin (h): a CPU kernels provider that overrides gelu_forward only,
// with the tanh approximation
//   gelu(x) ~ 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
// (deliberately different from the exact erf GeLU of the cpu backend, so a
// test can see which implementation ran).
#include <cmath>
#include <numbers>

#include "neox/backend.h"
#include "neox/kernel_contract.h"
#include "neox/options.h"
#include "neox/plugin.h"

namespace {

class GeluTanh final : public neox::KernelProvider {
 public:
  neox::DeviceType device() const override { return neox::DeviceType::cpu; }
  void register_kernels(neox::Kernels& table) override {
    table.gelu_forward = [](neox::Tensor& out, const neox::Tensor& inp) {
      // The SDK's checks of the op, then this plugin's limit: f32 only.
      const neox::ElementsShape s = neox::kernel_check::gelu_forward(neox::Device{}, out, inp);
      if (s.dtype != neox::DType::f32)
        neox::KernelChecker("gelu_forward", neox::Device{})
            .fail("test-gelu-tanh computes in f32 only, got inp " + inp.str());
      const float* x = inp.ptr<float>();
      float* y = out.ptr<float>();
      const double k = std::sqrt(2.0 / std::numbers::pi);
      for (std::int64_t i = 0; i < inp.numel(); ++i) {
        double v = x[i];
        y[i] = static_cast<float>(0.5 * v * (1.0 + std::tanh(k * (v + 0.044715 * v * v * v))));
      }
    };
  }
};

neox::KernelProvider* make(const neox::Options& options) {
  options.reject_unknown();
  return new GeluTanh();
}

}  // namespace

NEOX_PLUGIN(kernels, "test-gelu-tanh", "0.0", "test: tanh-approximation gelu_forward for the CPU", &make)
