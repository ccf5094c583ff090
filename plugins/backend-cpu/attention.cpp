// SPDX-License-Identifier: Apache-2.0
// Causal softmax attention, scale 1/sqrt(hs), with the row log-sum-exp saved
// so that the backward pass recomputes probabilities instead of storing T x T;
// and its incremental form over a key/value cache for generation.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "neox/kernel_contract.h"
#include "ops.h"

namespace neox::cpu {
namespace {

// a . b with eight independent partial sums (vectorises without -ffast-math)
float dot(const float* a, const float* b, std::int64_t n) {
  float acc[8] = {};
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int u = 0; u < 8; ++u) acc[u] += a[i + u] * b[i + u];
  float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// One causal attention row: o[hs] = softmax(scale * q.k_j for j <= last) . v_j,
// keys and values `stride` floats apart; att is scratch of last + 1 floats.
// Returns the row's log-sum-exp. Shared by attention_forward and
// attention_decode, so a sequence run in chunks gives the same numbers.
float attend_row(float* o, float* att, const float* q, const float* k0, const float* v0, std::int64_t stride,
                 std::int64_t last, std::int64_t hs, float scale) {
  float maxval = -std::numeric_limits<float>::infinity();
  for (std::int64_t j = 0; j <= last; ++j) {
    att[j] = dot(q, k0 + j * stride, hs) * scale;
    maxval = std::max(maxval, att[j]);
  }
  double sum = 0.0;
  for (std::int64_t j = 0; j <= last; ++j) {
    att[j] = std::exp(att[j] - maxval);
    sum += att[j];
  }
  const float inv = static_cast<float>(1.0 / sum);
  std::fill(o, o + hs, 0.0f);
  for (std::int64_t j = 0; j <= last; ++j) {
    const float* v = v0 + j * stride;
    const float p = att[j] * inv;
#pragma omp simd
    for (std::int64_t i = 0; i < hs; ++i) o[i] += p * v[i];
  }
  return static_cast<float>(maxval + std::log(sum));
}

// out[B,T,C], lse[B,NH,T] from qkv[B,T,3C]; rows (b, h, t) are independent
void attention_forward_f32(float* out, float* lse, const float* qkv, std::int64_t B, std::int64_t T, std::int64_t C,
                           std::int64_t NH) {
  const std::int64_t hs = C / NH, C3 = 3 * C;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  // one scratch row of scores per thread
  const int threads = omp_get_max_threads();
  std::vector<float> scratch(static_cast<std::size_t>(threads) * static_cast<std::size_t>(T));
#pragma omp parallel for collapse(3) schedule(dynamic, 4) if (B * NH * T * T * hs > 65536)
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t h = 0; h < NH; ++h)
      for (std::int64_t t = 0; t < T; ++t) {
        float* att = scratch.data() + static_cast<std::int64_t>(omp_get_thread_num()) * T;
        const float* base = qkv + b * T * C3 + h * hs;  // q, k, v of row 0 at +0, +C, +2C
        lse[(b * NH + h) * T + t] =
            attend_row(out + (b * T + t) * C + h * hs, att, base + t * C3, base + C, base + 2 * C, C3, t, hs, scale);
      }
}

// dqkv[B,T,3C] (written) from dout[B,T,C], qkv[B,T,3C], out[B,T,C], lse[B,NH,T].
// Each (b, h) owns its head's columns of dq, dk and dv, so threads never
// share. Query rows go in blocks of kRows: the probabilities p and score
// gradients ds of a block are kept in per-thread scratch rows, so that each
// dk_j and dv_j is read and written once per block instead of once per row.
void attention_backward_f32(float* dqkv, const float* dout, const float* qkv, const float* out, const float* lse,
                            std::int64_t B, std::int64_t T, std::int64_t C, std::int64_t NH) {
  constexpr std::int64_t kRows = 32;
  const std::int64_t hs = C / NH, C3 = 3 * C;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const std::int64_t per_thread = 2 * kRows * T;
  const int threads = omp_get_max_threads();
  std::vector<float> scratch(static_cast<std::size_t>(threads) * static_cast<std::size_t>(per_thread));
#pragma omp parallel for collapse(2) schedule(dynamic, 1) if (B * NH * T * T * hs > 65536)
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t h = 0; h < NH; ++h) {
      float* P = scratch.data() + static_cast<std::int64_t>(omp_get_thread_num()) * per_thread;
      float* DS = P + kRows * T;
      const float* Q = qkv + b * T * C3 + h * hs;  // row t at Q + t * C3; K at + C, V at + 2C
      const float* G = dout + b * T * C + h * hs;  // row t at G + t * C
      float* dQ = dqkv + b * T * C3 + h * hs;
      for (std::int64_t t = 0; t < T; ++t) {
        std::fill(dQ + t * C3, dQ + t * C3 + hs, 0.0f);
        std::fill(dQ + t * C3 + C, dQ + t * C3 + C + hs, 0.0f);
        std::fill(dQ + t * C3 + 2 * C, dQ + t * C3 + 2 * C + hs, 0.0f);
      }
      for (std::int64_t t0 = 0; t0 < T; t0 += kRows) {
        const std::int64_t t1 = std::min(T, t0 + kRows);
        // p, ds and dq for the rows of the block
        for (std::int64_t t = t0; t < t1; ++t) {
          const float* q = Q + t * C3;
          const float* g = G + t * C;
          float* dq = dQ + t * C3;
          float* p = P + (t - t0) * T;
          float* ds = DS + (t - t0) * T;
          const float row_lse = lse[(b * NH + h) * T + t];
          // sum_j p_j (g . v_j) = g . out_t
          const float D = dot(g, out + (b * T + t) * C + h * hs, hs);
          for (std::int64_t j = 0; j <= t; ++j) {
            const float* k = Q + j * C3 + C;
            p[j] = std::exp(dot(q, k, hs) * scale - row_lse);
            ds[j] = p[j] * (dot(g, k + C, hs) - D) * scale;
            const float dsj = ds[j];
#pragma omp simd
            for (std::int64_t i = 0; i < hs; ++i) dq[i] += dsj * k[i];
          }
        }
        // dk_j, dv_j from the block's rows t >= j
        for (std::int64_t j = 0; j < t1; ++j) {
          float* dk = dQ + j * C3 + C;
          float* dv = dk + C;
          for (std::int64_t t = std::max(j, t0); t < t1; ++t) {
            const float pj = P[(t - t0) * T + j], dsj = DS[(t - t0) * T + j];
            const float* q = Q + t * C3;
            const float* g = G + t * C;
#pragma omp simd
            for (std::int64_t i = 0; i < hs; ++i) {
              dk[i] += dsj * q[i];
              dv[i] += pj * g[i];
            }
          }
        }
      }
    }
}

// Incremental attention: writes the k, v of qkv[B,Tq,3C] into kc, vc
// [B,NH,maxT,hs] at positions offset.., then out[B,Tq,C] with query i over
// cache positions [0, offset + i]. The arithmetic of each row is that of
// attention_forward_f32 (same dot, same order of sums), so a sequence run in
// chunks gives the same numbers as one attention_forward over all of it.
void attention_decode_f32(float* out, float* kc, float* vc, const float* qkv, std::int64_t B, std::int64_t Tq,
                          std::int64_t C, std::int64_t NH, std::int64_t maxT, std::int64_t offset) {
  const std::int64_t hs = C / NH, C3 = 3 * C, total = offset + Tq;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
#pragma omp parallel for collapse(3) schedule(static) if (B * NH * Tq * hs > (1 << 22))
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t h = 0; h < NH; ++h)
      for (std::int64_t t = 0; t < Tq; ++t) {
        const float* k = qkv + (b * Tq + t) * C3 + C + h * hs;
        const std::int64_t row = ((b * NH + h) * maxT + offset + t) * hs;
        std::copy(k, k + hs, kc + row);
        std::copy(k + C, k + C + hs, vc + row);
      }
  const int threads = omp_get_max_threads();
  std::vector<float> scratch(static_cast<std::size_t>(threads) * static_cast<std::size_t>(total));
  // Threads only for work worth them (a long prompt, a long cache, a large
  // batch). A one-token step is a fraction of a millisecond of work, and
  // OpenMP's threads, still spinning after the region, compete with
  // OpenBLAS's threads in the matmuls that follow: with attention_forward's
  // threshold, steps of B = 8 were 7x slower on 2 cores.
#pragma omp parallel for collapse(3) schedule(dynamic, 4) if (B * NH * Tq * total * hs > (1 << 22))
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t h = 0; h < NH; ++h)
      for (std::int64_t t = 0; t < Tq; ++t) {
        float* att = scratch.data() + static_cast<std::int64_t>(omp_get_thread_num()) * total;
        const float* q = qkv + (b * Tq + t) * C3 + h * hs;
        const float* K = kc + (b * NH + h) * maxT * hs;
        const float* V = vc + (b * NH + h) * maxT * hs;
        attend_row(out + (b * Tq + t) * C + h * hs, att, q, K, V, hs, offset + t, hs, scale);
      }
}

}  // namespace

void attention_forward(Tensor& out, Tensor& lse, const Tensor& qkv, int n_head) {
  const QkvShape s = kernel_check::attention_forward(Device{}, out, lse, qkv, n_head);
  attention_forward_f32(out.ptr<float>(), lse.ptr<float>(), qkv.ptr<float>(), s.B, s.T, s.C, s.n_head);
}

void attention_backward(Tensor& dqkv, const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse,
                        int n_head) {
  const QkvShape s = kernel_check::attention_backward(Device{}, dqkv, dout, qkv, out, lse, n_head);
  attention_backward_f32(dqkv.ptr<float>(), dout.ptr<float>(), qkv.ptr<float>(), out.ptr<float>(), lse.ptr<float>(),
                         s.B, s.T, s.C, s.n_head);
}

void attention_decode(Tensor& out, Tensor& k_cache, Tensor& v_cache, const Tensor& qkv, int n_head,
                      std::int64_t position_offset) {
  const QkvShape s = kernel_check::attention_decode(Device{}, out, k_cache, v_cache, qkv, n_head, position_offset);
  if (s.T == 0 || s.B == 0) return;
  attention_decode_f32(out.ptr<float>(), k_cache.ptr<float>(), v_cache.ptr<float>(), qkv.ptr<float>(), s.B, s.T, s.C,
                       s.n_head, s.max_T, position_offset);
}

}  // namespace neox::cpu
