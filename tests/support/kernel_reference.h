// SPDX-License-Identifier: Apache-2.0
// Float64 reference implementations of the kernel operations (neox/kernels.h),
// written for clarity, not speed: plain loops, explicit T x T attention
// matrices, no tricks. The kernel tests compare every backend with these and
// check every backward here against finite differences of the forward.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace neox::ref {

using Vec = std::vector<double>;

// c[M,N] = alpha * op(a) @ op(b) + beta * c (beta = 0 ignores c)
inline void matmul(Vec& c, const Vec& a, const Vec& b, int M, int N, int K, bool trans_a, bool trans_b, double alpha,
                   double beta) {
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      double s = 0.0;
      for (int k = 0; k < K; ++k) {
        double av = trans_a ? a[k * M + i] : a[i * K + k];
        double bv = trans_b ? b[j * K + k] : b[k * N + j];
        s += av * bv;
      }
      double old = beta == 0.0 ? 0.0 : beta * c[i * N + j];
      c[i * N + j] = alpha * s + old;
    }
}

// out[N,C] += bias[C]
inline void add_bias(Vec& out, const Vec& bias, int N, int C) {
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c) out[n * C + c] += bias[c];
}

// dbias[C] += column sums of dout[N,C]
inline void bias_backward(Vec& dbias, const Vec& dout, int N, int C) {
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c) dbias[c] += dout[n * C + c];
}

// out[N,C], mean[N], rstd[N] = LayerNorm(inp[N,C]) with weight[C], bias[C]
inline void layernorm_forward(Vec& out, Vec& mean, Vec& rstd, const Vec& inp, const Vec& weight, const Vec& bias, int N,
                              int C, double eps) {
  for (int n = 0; n < N; ++n) {
    double m = 0.0;
    for (int c = 0; c < C; ++c) m += inp[n * C + c];
    m /= C;
    double var = 0.0;
    for (int c = 0; c < C; ++c) var += (inp[n * C + c] - m) * (inp[n * C + c] - m);
    var /= C;
    double r = 1.0 / std::sqrt(var + eps);
    for (int c = 0; c < C; ++c) out[n * C + c] = (inp[n * C + c] - m) * r * weight[c] + bias[c];
    mean[n] = m;
    rstd[n] = r;
  }
}

// dinp[N,C], dweight[C], dbias[C] += gradients of LayerNorm given dout[N,C]
inline void layernorm_backward(Vec& dinp, Vec& dweight, Vec& dbias, const Vec& dout, const Vec& inp, const Vec& weight,
                               int N, int C, double eps) {
  Vec out(inp.size()), mean(N), rstd(N);
  layernorm_forward(out, mean, rstd, inp, weight, Vec(C, 0.0), N, C, eps);
  for (int n = 0; n < N; ++n) {
    // y = xhat * w + b, xhat = (x - mean) * rstd
    // dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = dy * w
    Vec xhat(C), dxhat(C);
    double mean_dxhat = 0.0, mean_dxhat_xhat = 0.0;
    for (int c = 0; c < C; ++c) {
      xhat[c] = (inp[n * C + c] - mean[n]) * rstd[n];
      dxhat[c] = dout[n * C + c] * weight[c];
      mean_dxhat += dxhat[c] / C;
      mean_dxhat_xhat += dxhat[c] * xhat[c] / C;
    }
    for (int c = 0; c < C; ++c) {
      dinp[n * C + c] += rstd[n] * (dxhat[c] - mean_dxhat - xhat[c] * mean_dxhat_xhat);
      dweight[c] += dout[n * C + c] * xhat[c];
      dbias[c] += dout[n * C + c];
    }
  }
}

// GeLU, exact: x * Phi(x)
inline double gelu(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }
inline double gelu_grad(double x) {
  const double pi = 3.14159265358979323846;
  return 0.5 * (1.0 + std::erf(x / std::sqrt(2.0))) + x * std::exp(-0.5 * x * x) / std::sqrt(2.0 * pi);
}

// Rotary on the q and k parts of qkv[B,T,3C] in place; sign = +1 forward,
// -1 for the backward (rotation by -angle, the transpose). inv_freq is
// rounded to float as Hugging Face / GPT-NeoX compute it in float32; the
// angle, cos and sin are exact.
inline void rotary(Vec& qkv, int B, int T, int C, int n_head, int rotary_dims, double base, std::int64_t offset,
                   int sign) {
  const int hs = C / n_head, half = rotary_dims / 2;
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      for (int part = 0; part < 2; ++part)
        for (int h = 0; h < n_head; ++h)
          for (int i = 0; i < half; ++i) {
            double inv_freq = static_cast<float>(std::pow(base, -2.0 * i / rotary_dims));
            double angle = static_cast<double>(offset + t) * inv_freq;
            double c = std::cos(angle), s = sign * std::sin(angle);
            double& x1 = qkv[((b * T + t) * 3 * C) + part * C + h * hs + i];
            double& x2 = qkv[((b * T + t) * 3 * C) + part * C + h * hs + i + half];
            double y1 = x1 * c - x2 * s, y2 = x2 * c + x1 * s;
            x1 = y1;
            x2 = y2;
          }
}

// out[B,T,C], lse[B,NH,T] = causal softmax attention of qkv[B,T,3C], with the
// full probability matrix att[B,NH,T,T] (zero above the diagonal) for tests.
inline void attention_forward(Vec& out, Vec& lse, Vec& att, const Vec& qkv, int B, int T, int C, int NH) {
  const int hs = C / NH;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hs));
  auto q = [&](int b, int t, int h, int i) { return qkv[(b * T + t) * 3 * C + h * hs + i]; };
  auto k = [&](int b, int t, int h, int i) { return qkv[(b * T + t) * 3 * C + C + h * hs + i]; };
  auto v = [&](int b, int t, int h, int i) { return qkv[(b * T + t) * 3 * C + 2 * C + h * hs + i]; };
  att.assign(static_cast<std::size_t>(B) * NH * T * T, 0.0);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h)
      for (int t = 0; t < T; ++t) {
        Vec s(t + 1);
        double mx = -std::numeric_limits<double>::infinity();
        for (int j = 0; j <= t; ++j) {
          s[j] = 0.0;
          for (int i = 0; i < hs; ++i) s[j] += q(b, t, h, i) * k(b, j, h, i);
          s[j] *= scale;
          mx = std::max(mx, s[j]);
        }
        double z = 0.0;
        for (int j = 0; j <= t; ++j) z += std::exp(s[j] - mx);
        lse[(b * NH + h) * T + t] = mx + std::log(z);
        for (int j = 0; j <= t; ++j)
          att[((static_cast<std::size_t>(b) * NH + h) * T + t) * T + j] = std::exp(s[j] - mx) / z;
        for (int i = 0; i < hs; ++i) {
          double o = 0.0;
          for (int j = 0; j <= t; ++j)
            o += att[((static_cast<std::size_t>(b) * NH + h) * T + t) * T + j] * v(b, j, h, i);
          out[(b * T + t) * C + h * hs + i] = o;
        }
      }
}

// dqkv[B,T,3C] (written) from dout[B,T,C] through the softmax Jacobian.
inline void attention_backward(Vec& dqkv, const Vec& dout, const Vec& qkv, int B, int T, int C, int NH) {
  const int hs = C / NH;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hs));
  Vec out(static_cast<std::size_t>(B) * T * C), lse(static_cast<std::size_t>(B) * NH * T), att;
  attention_forward(out, lse, att, qkv, B, T, C, NH);
  std::fill(dqkv.begin(), dqkv.end(), 0.0);
  auto at = [&](int b, int h, int t, int j) { return att[((static_cast<std::size_t>(b) * NH + h) * T + t) * T + j]; };
  auto idx = [&](int b, int t, int part, int h, int i) { return (b * T + t) * 3 * C + part * C + h * hs + i; };
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h)
      for (int t = 0; t < T; ++t) {
        // dP[t][j] = dout_t . v_j; dS = P * (dP - sum_k P[t][k] dP[t][k])
        Vec dP(t + 1, 0.0);
        for (int j = 0; j <= t; ++j)
          for (int i = 0; i < hs; ++i) dP[j] += dout[(b * T + t) * C + h * hs + i] * qkv[idx(b, j, 2, h, i)];
        double row = 0.0;
        for (int j = 0; j <= t; ++j) row += at(b, h, t, j) * dP[j];
        for (int j = 0; j <= t; ++j) {
          double dS = at(b, h, t, j) * (dP[j] - row);
          for (int i = 0; i < hs; ++i) {
            dqkv[idx(b, j, 2, h, i)] += at(b, h, t, j) * dout[(b * T + t) * C + h * hs + i];
            dqkv[idx(b, t, 0, h, i)] += scale * dS * qkv[idx(b, j, 1, h, i)];
            dqkv[idx(b, j, 1, h, i)] += scale * dS * qkv[idx(b, t, 0, h, i)];
          }
        }
      }
}

// Incremental attention over a key/value cache: writes the k, v of
// qkv[B,Tq,3C] into kc, vc [B,NH,maxT,hs] at positions offset .. offset+Tq-1,
// then out[B,Tq,C] with query i over cache positions [0, offset + i].
inline void attention_decode(Vec& out, Vec& kc, Vec& vc, const Vec& qkv, int B, int Tq, int C, int NH, int maxT,
                             int offset) {
  const int hs = C / NH;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hs));
  auto cache = [&](int b, int h, int pos, int i) {
    return ((static_cast<std::size_t>(b) * NH + h) * maxT + pos) * hs + i;
  };
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < Tq; ++t)
      for (int h = 0; h < NH; ++h)
        for (int i = 0; i < hs; ++i) {
          kc[cache(b, h, offset + t, i)] = qkv[(b * Tq + t) * 3 * C + C + h * hs + i];
          vc[cache(b, h, offset + t, i)] = qkv[(b * Tq + t) * 3 * C + 2 * C + h * hs + i];
        }
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h)
      for (int t = 0; t < Tq; ++t) {
        const int last = offset + t;
        Vec s(last + 1);
        double mx = -std::numeric_limits<double>::infinity();
        for (int j = 0; j <= last; ++j) {
          s[j] = 0.0;
          for (int i = 0; i < hs; ++i) s[j] += qkv[(b * Tq + t) * 3 * C + h * hs + i] * kc[cache(b, h, j, i)];
          s[j] *= scale;
          mx = std::max(mx, s[j]);
        }
        double z = 0.0;
        for (int j = 0; j <= last; ++j) z += std::exp(s[j] - mx);
        for (int i = 0; i < hs; ++i) {
          double o = 0.0;
          for (int j = 0; j <= last; ++j) o += std::exp(s[j] - mx) / z * vc[cache(b, h, j, i)];
          out[(b * Tq + t) * C + h * hs + i] = o;
        }
      }
}

// losses[N], lse[N] = cross-entropy of logits[N,V] against targets (negative: ignored, loss 0)
inline void cross_entropy_forward(Vec& losses, Vec& lse, const Vec& logits, const std::vector<std::int32_t>& targets,
                                  int N, int V) {
  for (int n = 0; n < N; ++n) {
    double mx = *std::max_element(logits.begin() + n * V, logits.begin() + (n + 1) * V);
    double z = 0.0;
    for (int i = 0; i < V; ++i) z += std::exp(logits[n * V + i] - mx);
    lse[n] = mx + std::log(z);
    losses[n] = targets[n] < 0 ? 0.0 : lse[n] - logits[n * V + targets[n]];
  }
}

// dlogits[N,V] = (softmax - onehot) * dloss, 0 in ignored rows
inline void cross_entropy_backward(Vec& dlogits, const Vec& logits, const std::vector<std::int32_t>& targets, int N,
                                   int V, double dloss) {
  Vec losses(N), lse(N);
  cross_entropy_forward(losses, lse, logits, targets, N, V);
  for (int n = 0; n < N; ++n)
    for (int i = 0; i < V; ++i)
      dlogits[n * V + i] =
          targets[n] < 0 ? 0.0 : (std::exp(logits[n * V + i] - lse[n]) - (i == targets[n] ? 1.0 : 0.0)) * dloss;
}

// out[N,C] = table[ids[N]]
inline void embedding_forward(Vec& out, const std::vector<std::int32_t>& ids, const Vec& table, int N, int C) {
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c) out[n * C + c] = table[ids[n] * C + c];
}

// dtable[V,C] += dout[N,C] at rows ids[N]
inline void embedding_backward(Vec& dtable, const std::vector<std::int32_t>& ids, const Vec& dout, int N, int C) {
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c) dtable[ids[n] * C + c] += dout[n * C + c];
}

// torch.optim.AdamW, one step, element by element
inline void adamw(Vec& p, const Vec& grad, Vec& m, Vec& v, double lr, double beta1, double beta2, double eps,
                  double weight_decay, std::int64_t step, double grad_scale) {
  for (std::size_t i = 0; i < p.size(); ++i) {
    double g = grad[i] * grad_scale;
    p[i] -= lr * weight_decay * p[i];
    m[i] = beta1 * m[i] + (1 - beta1) * g;
    v[i] = beta2 * v[i] + (1 - beta2) * g * g;
    double mhat_scale = 1.0 / (1.0 - std::pow(beta1, static_cast<double>(step)));
    double bc2 = 1.0 - std::pow(beta2, static_cast<double>(step));
    p[i] -= lr * mhat_scale * m[i] / (std::sqrt(v[i]) / std::sqrt(bc2) + eps);
  }
}

}  // namespace neox::ref
