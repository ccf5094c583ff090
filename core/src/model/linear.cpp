// SPDX-License-Identifier: Apache-2.0
#include "layers.h"

#include <cmath>

namespace neox::layers {

double init_std(const ModelConfig& cfg, const std::string& method) {
  const double C = static_cast<double>(cfg.hidden_size);
  if (method == "small_init") return std::sqrt(2.0 / (5.0 * C));
  if (method == "wang_init") return 2.0 / (static_cast<double>(cfg.num_layers) * std::sqrt(C));
  return cfg.init_method_std;
}

void linear_forward(Kernels& k, Tensor& y, const Tensor& x, const Tensor& w, const Tensor& b) {
  k.matmul(y, x, w, false, true, 1.0f, 0.0f);  // [N,out] = [N,in] @ [out,in]^T
  k.add_bias(y, b);
}

void linear_backward(Kernels& k, Tensor& dx, Tensor& dw, Tensor& db, const Tensor& dy, const Tensor& x,
                     const Tensor& w) {
  k.matmul(dw, dy, x, true, false, 1.0f, 1.0f);  // [out,in] += [N,out]^T @ [N,in]
  k.bias_backward(db, dy);
  if (dx.defined()) k.matmul(dx, dy, w, false, false, 1.0f, 0.0f);  // [N,in] = [N,out] @ [out,in]
}

}  // namespace neox::layers
