// SPDX-License-Identifier: Apache-2.0
// LayerNorm over the last dimension (biased variance, as torch.nn.LayerNorm).
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "neox/kernel_contract.h"
#include "ops.h"

namespace neox::cpu {
namespace {

// out[N,C], mean[N], rstd[N] from inp[N,C], weight[C], bias[C]
// Statistics in double with a two-pass mean and variance.
void layernorm_forward_f32(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                           const float* bias, std::int64_t N, std::int64_t C, float eps) {
#pragma omp parallel for schedule(static) if (N * C > 16384)
  for (std::int64_t n = 0; n < N; ++n) {
    const float* x = inp + n * C;
    double m = 0.0;
    for (std::int64_t c = 0; c < C; ++c) m += x[c];
    m /= static_cast<double>(C);
    double var = 0.0;
    for (std::int64_t c = 0; c < C; ++c) {
      double d = x[c] - m;
      var += d * d;
    }
    var /= static_cast<double>(C);
    double r = 1.0 / std::sqrt(var + static_cast<double>(eps));
    float* o = out + n * C;
    for (std::int64_t c = 0; c < C; ++c) o[c] = static_cast<float>((x[c] - m) * r * weight[c] + bias[c]);
    mean[n] = static_cast<float>(m);
    rstd[n] = static_cast<float>(r);
  }
}

// dinp[N,C], dweight[C], dbias[C] += gradients from dout[N,C], inp[N,C], weight[C], mean[N], rstd[N]
void layernorm_backward_f32(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                            const float* weight, const float* mean, const float* rstd, std::int64_t N, std::int64_t C) {
  const bool parallel = N * C > 16384;
  // dinp: rows are independent.
#pragma omp parallel for schedule(static) if (parallel)
  for (std::int64_t n = 0; n < N; ++n) {
    const float* x = inp + n * C;
    const float* g = dout + n * C;
    const double m = mean[n], r = rstd[n];
    double mean_dnorm = 0.0, mean_dnorm_xhat = 0.0;
    for (std::int64_t c = 0; c < C; ++c) {
      double dnorm = static_cast<double>(g[c]) * weight[c];
      mean_dnorm += dnorm;
      mean_dnorm_xhat += dnorm * (x[c] - m) * r;
    }
    mean_dnorm /= static_cast<double>(C);
    mean_dnorm_xhat /= static_cast<double>(C);
    float* d = dinp + n * C;
    for (std::int64_t c = 0; c < C; ++c) {
      double dnorm = static_cast<double>(g[c]) * weight[c];
      double xhat = (x[c] - m) * r;
      d[c] = static_cast<float>(d[c] + r * (dnorm - mean_dnorm - xhat * mean_dnorm_xhat));
    }
  }
  // dweight, dbias: column sums over rows, each thread owning a block of columns.
  constexpr std::int64_t kBlock = 64;
  const std::int64_t blocks = (C + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (parallel)
  for (std::int64_t blk = 0; blk < blocks; ++blk) {
    const std::int64_t c0 = blk * kBlock, c1 = std::min(C, c0 + kBlock);
    double dw[kBlock] = {}, db[kBlock] = {};
    for (std::int64_t n = 0; n < N; ++n) {
      const float* x = inp + n * C;
      const float* g = dout + n * C;
      const double m = mean[n], r = rstd[n];
      for (std::int64_t c = c0; c < c1; ++c) {
        dw[c - c0] += g[c] * ((x[c] - m) * r);
        db[c - c0] += g[c];
      }
    }
    for (std::int64_t c = c0; c < c1; ++c) {
      dweight[c] = static_cast<float>(dweight[c] + dw[c - c0]);
      dbias[c] = static_cast<float>(dbias[c] + db[c - c0]);
    }
  }
}

}  // namespace

void layernorm_forward(Tensor& out, Tensor& mean, Tensor& rstd, const Tensor& inp, const Tensor& weight,
                       const Tensor& bias, float eps) {
  const RowsShape s = kernel_check::layernorm_forward(Device{}, out, mean, rstd, inp, weight, bias, eps);
  layernorm_forward_f32(out.ptr<float>(), mean.ptr<float>(), rstd.ptr<float>(), inp.ptr<float>(), weight.ptr<float>(),
                        bias.ptr<float>(), s.rows, s.cols, eps);
}

void layernorm_backward(Tensor& dinp, Tensor& dweight, Tensor& dbias, const Tensor& dout, const Tensor& inp,
                        const Tensor& weight, const Tensor& mean, const Tensor& rstd) {
  const RowsShape s = kernel_check::layernorm_backward(Device{}, dinp, dweight, dbias, dout, inp, weight, mean, rstd);
  layernorm_backward_f32(dinp.ptr<float>(), dweight.ptr<float>(), dbias.ptr<float>(), dout.ptr<float>(),
                         inp.ptr<float>(), weight.ptr<float>(), mean.ptr<float>(), rstd.ptr<float>(), s.rows, s.cols);
}

}  // namespace neox::cpu
