// SPDX-License-Identifier: Apache-2.0
// Rotary position embedding (GPT-NeoX / Hugging Face rotate-half pairing).
//
// inv_freq[i] = 1 / base^(2i / rotary_dims) is computed in float exactly as
// Hugging Face and GPT-NeoX do (`1.0 / (base ** (arange(0, d, 2).float() / d))`),
// so checkpoints see the frequencies they were trained with; the angle
// pos * inv_freq[i] and its cosine and sine are computed in double.
#include <cstdint>
#include <vector>

#include "neox/kernel_contract.h"
#include "ops.h"

namespace neox::cpu {
namespace {

// qkv[B,T,3C] rotated in place: q and k of each head, first rotary_dims dims;
// direction +1 rotates by +angle (forward), -1 by -angle (backward = transpose)
void rotary_f32(float* qkv, const double* cos_sin, std::int64_t B, std::int64_t T, std::int64_t C, std::int64_t n_head,
                int rotary_dims, int direction) {
  const std::int64_t hs = C / n_head;
  const int half = rotary_dims / 2;
  const double sign = direction > 0 ? 1.0 : -1.0;
#pragma omp parallel for collapse(2) schedule(static) if (B * T * C > 16384)
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < T; ++t) {
      float* row = qkv + (b * T + t) * 3 * C;
      const double* cs = cos_sin + t * half * 2;
      for (std::int64_t part = 0; part < 2; ++part)  // q, k; v is not rotated
        for (std::int64_t h = 0; h < n_head; ++h) {
          float* x = row + part * C + h * hs;
          for (int i = 0; i < half; ++i) {
            const double c = cs[2 * i], s = sign * cs[2 * i + 1];
            const double x1 = x[i], x2 = x[i + half];
            x[i] = static_cast<float>(x1 * c - x2 * s);
            x[i + half] = static_cast<float>(x2 * c + x1 * s);
          }
        }
    }
}

void rotary(const QkvShape& s, Tensor& qkv, int rotary_dims, float base, std::int64_t position_offset, int direction) {
  if (rotary_dims == 0 || qkv.numel() == 0) return;
  std::vector<double> table = rotary_cos_sin_table(position_offset, s.T, rotary_dims, base);
  rotary_f32(qkv.ptr<float>(), table.data(), s.B, s.T, s.C, s.n_head, rotary_dims, direction);
}

}  // namespace

void rotary_forward(Tensor& qkv, int n_head, int rotary_dims, float base, std::int64_t position_offset) {
  const QkvShape s = kernel_check::rotary_forward(Device{}, qkv, n_head, rotary_dims, base, position_offset);
  rotary(s, qkv, rotary_dims, base, position_offset, +1);
}

void rotary_backward(Tensor& dqkv, int n_head, int rotary_dims, float base, std::int64_t position_offset) {
  const QkvShape s = kernel_check::rotary_backward(Device{}, dqkv, n_head, rotary_dims, base, position_offset);
  rotary(s, dqkv, rotary_dims, base, position_offset, -1);
}

}  // namespace neox::cpu
