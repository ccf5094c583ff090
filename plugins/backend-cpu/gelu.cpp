// SPDX-License-Identifier: Apache-2.0
// Exact (erf) GeLU and its derivative.
#include <cmath>
#include <cstdint>

#include "neox/kernel_contract.h"
#include "ops.h"

namespace neox::cpu {
namespace {

constexpr float kInvSqrt2 = 0.70710678118654752440f;
constexpr float kInvSqrt2Pi = 0.39894228040143267794f;

// out[n] = x * Phi(x), x = inp[n]; out may alias inp
void gelu_forward_f32(float* out, const float* inp, std::int64_t n) {
#pragma omp parallel for schedule(static) if (n > 16384)
  for (std::int64_t i = 0; i < n; ++i) {
    float x = inp[i];
    out[i] = 0.5f * x * (1.0f + std::erf(x * kInvSqrt2));
  }
}

// dinp[n] = (Phi(x) + x * phi(x)) * dout[n]; dinp may alias dout
void gelu_backward_f32(float* dinp, const float* inp, const float* dout, std::int64_t n) {
#pragma omp parallel for schedule(static) if (n > 16384)
  for (std::int64_t i = 0; i < n; ++i) {
    float x = inp[i];
    float cdf = 0.5f * (1.0f + std::erf(x * kInvSqrt2));
    float pdf = kInvSqrt2Pi * std::exp(-0.5f * x * x);
    dinp[i] = (cdf + x * pdf) * dout[i];
  }
}

}  // namespace

void gelu_forward(Tensor& out, const Tensor& inp) {
  const ElementsShape s = kernel_check::gelu_forward(Device{}, out, inp);
  gelu_forward_f32(out.ptr<float>(), inp.ptr<float>(), s.n);
}

void gelu_backward(Tensor& dinp, const Tensor& inp, const Tensor& dout) {
  const ElementsShape s = kernel_check::gelu_backward(Device{}, dinp, inp, dout);
  gelu_backward_f32(dinp.ptr<float>(), inp.ptr<float>(), dout.ptr<float>(), s.n);
}

}  // namespace neox::cpu
