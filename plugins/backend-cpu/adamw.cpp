// SPDX-License-Identifier: Apache-2.0
// One step of PyTorch's AdamW (decoupled weight decay) over a contiguous slice.
#include <cmath>
#include <cstdint>

#include "neox/kernel_contract.h"
#include "ops.h"

namespace neox::cpu {
namespace {

// param[n], m[n], v[n] updated from grad[n]; per-element arithmetic in double,
// in torch.optim.AdamW's order (decay first, then moments, then the step)
void adamw_update_f32(float* param, const float* grad, float* m, float* v, const AdamWParams& p, std::int64_t n) {
  const double lr = p.lr, b1 = p.beta1, b2 = p.beta2, eps = p.eps;
  const double decay = 1.0 - lr * static_cast<double>(p.weight_decay);
  const double step = static_cast<double>(p.step);
  const double step_size = lr / (1.0 - std::pow(b1, step));
  const double bc2_sqrt = std::sqrt(1.0 - std::pow(b2, step));
  const double scale = p.grad_scale;
#pragma omp parallel for schedule(static) if (n > (1 << 15))
  for (std::int64_t i = 0; i < n; ++i) {
    const double g = grad[i] * scale;
    const double w = param[i] * decay;
    const double mi = b1 * m[i] + (1.0 - b1) * g;
    const double vi = b2 * v[i] + (1.0 - b2) * g * g;
    m[i] = static_cast<float>(mi);
    v[i] = static_cast<float>(vi);
    param[i] = static_cast<float>(w - step_size * mi / (std::sqrt(vi) / bc2_sqrt + eps));
  }
}

}  // namespace

void adamw_update(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWParams& p) {
  const ElementsShape s = kernel_check::adamw_update(Device{}, param, grad, m, v, p);
  adamw_update_f32(param.ptr<float>(), grad.ptr<float>(), m.ptr<float>(), v.ptr<float>(), p, s.n);
}

}  // namespace neox::cpu
