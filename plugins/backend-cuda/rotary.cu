// SPDX-License-Identifier: Apache-2.0
// Rotary embedding, in place on the q and k parts of qkv[B,T,3C]. One thread
// per rotated pair (i, i + half) of one head of q or k at one position; the
// rotation is computed in double from the host-built cos/sin table and
// rounded once, as the cpu backend does.
#include "common.cuh"

namespace neox::cuda {
namespace {

template <typename T>
__global__ void rotary_kernel(T* qkv, const double* cos_sin, std::int64_t B, std::int64_t T_len, std::int64_t C,
                              std::int64_t n_head, int half, double sign) {
  const std::int64_t hs = C / n_head;
  const std::int64_t total = B * T_len * 2 * n_head * half;
  for (std::int64_t idx = global_thread(); idx < total; idx += grid_threads()) {
    const std::int64_t i = idx % half;
    std::int64_t rest = idx / half;
    const std::int64_t h = rest % n_head;
    rest /= n_head;
    const std::int64_t part = rest % 2;  // 0: q, 1: k
    const std::int64_t bt = rest / 2;    // b * T + t
    const std::int64_t t = bt % T_len;
    T* x = qkv + bt * 3 * C + part * C + h * hs;
    const double c = cos_sin[(t * half + i) * 2];
    const double s = sign * cos_sin[(t * half + i) * 2 + 1];
    const double x1 = to_float(x[i]), x2 = to_float(x[i + half]);
    x[i] = from_float<T>(static_cast<float>(x1 * c - x2 * s));
    x[i + half] = from_float<T>(static_cast<float>(x2 * c + x1 * s));
  }
}

}  // namespace

void launch_rotary(const Launch& l, DType dt, void* qkv, const double* cos_sin, std::int64_t B, std::int64_t T,
                   std::int64_t C, std::int64_t n_head, int rotary_dims, double sign) {
  const int half = rotary_dims / 2;
  const std::int64_t total = B * T * 2 * n_head * half;
  if (total <= 0) return;
  dispatch_float(dt, "rotary", [&](auto tag) {
    using E = typename decltype(tag)::type;
    rotary_kernel<E><<<grid_for(total, l.max_blocks), kThreads, 0, l.stream>>>(static_cast<E*>(qkv), cos_sin, B, T, C,
                                                                               n_head, half, sign);
  });
  NEOX_CUDA_CHECK_LAUNCH();
}

}  // namespace neox::cuda
