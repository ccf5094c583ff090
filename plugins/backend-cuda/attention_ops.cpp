// SPDX-License-Identifier: Apache-2.0
// attention_forward / attention_backward / attention_decode: argument checks
// (as the cpu backend's, plus the kernels' head-size limit), then the
// attention kernels of attention.cu.
#include <atomic>
#include <cstdint>
#include <limits>
#include <string>

#include "attention.h"
#include "check.h"
#include "cuda_check.h"
#include "ops.h"

#include <spdlog/spdlog.h>

namespace neox::cuda {
namespace {

// The attention kernels take int sizes.
void require_int_sizes(const Checker& ck, const QkvShape& s, std::int64_t extra = 0) {
  constexpr std::int64_t kMax = std::numeric_limits<int>::max();
  if (s.B > kMax || s.T > kMax || s.n_head > kMax || s.hs > kMax || extra > kMax ||
      s.B * s.n_head * s.T > kMax)
    ck.fail("B = " + std::to_string(s.B) + ", T = " + std::to_string(s.T) + ", n_head = " + std::to_string(s.n_head) +
            " exceed the attention kernels' int range");
}

void require_head_size(const Checker& ck, const QkvShape& s) {
  if (s.hs > kMaxAttentionHeadSize)
    ck.fail("head size " + std::to_string(s.hs) + " (C = " + std::to_string(s.C) + ", n_head = " +
            std::to_string(s.n_head) + ") exceeds " + std::to_string(kMaxAttentionHeadSize) +
            ", the largest the cuda attention kernels support");
}

}  // namespace

void note_attention_fallback(const char* why) {
  static std::atomic<bool> warned{false};
  if (!warned.exchange(true))
    spdlog::warn("cuda attention: {}, so attention runs on the CUDA cores instead of the tensor cores (slower)", why);
}

void attention_forward(Context& ctx, Tensor& out, Tensor& lse, const Tensor& qkv, int n_head) {
  Checker ck("attention_forward", ctx.device());
  const QkvShape s = ck.qkv(qkv, n_head, "qkv");
  const DType dt = qkv.dtype();
  ck.matrix_shape(out, dt, s.B * s.T, s.C, "out", "[B*T, C] for qkv " + qkv.str());
  ck.numel(lse, DType::f32, s.B * s.n_head * s.T, "lse", "[B, n_head, T] for qkv " + qkv.str());
  ck.disjoint(out, qkv, "out", "qkv");
  ck.disjoint(lse, qkv, "lse", "qkv");
  ck.disjoint(out, lse, "out", "lse");
  require_head_size(ck, s);
  require_int_sizes(ck, s);
  if (s.B * s.T == 0) return;
  cuda::attention_forward(ctx.stream(), dt, out.data(), lse.ptr<float>(), qkv.data(), static_cast<int>(s.B),
                          static_cast<int>(s.T), static_cast<int>(s.n_head), static_cast<int>(s.hs),
                          ctx.attention_tensor_cores());
  NEOX_CUDA_CHECK_LAUNCH();
}

void attention_backward(Context& ctx, Tensor& dqkv, const Tensor& dout, const Tensor& qkv, const Tensor& out,
                        const Tensor& lse, int n_head) {
  Checker ck("attention_backward", ctx.device());
  const QkvShape s = ck.qkv(qkv, n_head, "qkv");
  const DType dt = qkv.dtype();
  ck.matrix_shape(dqkv, dt, s.B * s.T, 3 * s.C, "dqkv", "the shape of qkv " + qkv.str());
  ck.matrix_shape(dout, dt, s.B * s.T, s.C, "dout", "[B*T, C] for qkv " + qkv.str());
  ck.matrix_shape(out, dt, s.B * s.T, s.C, "out", "[B*T, C] for qkv " + qkv.str());
  ck.numel(lse, DType::f32, s.B * s.n_head * s.T, "lse", "[B, n_head, T] for qkv " + qkv.str());
  ck.disjoint(dqkv, dout, "dqkv", "dout");
  ck.disjoint(dqkv, qkv, "dqkv", "qkv");
  ck.disjoint(dqkv, out, "dqkv", "out");
  ck.disjoint(dqkv, lse, "dqkv", "lse");
  require_head_size(ck, s);
  require_int_sizes(ck, s);
  if (s.B * s.T == 0) return;
  // D = rowsum(dout * out) per (b, h, t): scratch for the kernels, freed (stream-ordered) on return.
  DeviceBuffer D = ctx.temp(static_cast<std::size_t>(s.B * s.n_head * s.T) * sizeof(float));
  cuda::attention_backward(ctx.stream(), dt, dqkv.data(), dout.data(), qkv.data(), out.data(), lse.ptr<float>(),
                           D.as<float>(), static_cast<int>(s.B), static_cast<int>(s.T), static_cast<int>(s.n_head),
                           static_cast<int>(s.hs), ctx.attention_tensor_cores());
  NEOX_CUDA_CHECK_LAUNCH();
}

void attention_decode(Context& ctx, Tensor& out, Tensor& k_cache, Tensor& v_cache, const Tensor& qkv, int n_head,
                      std::int64_t position_offset) {
  Checker ck("attention_decode", ctx.device());
  const QkvShape s = ck.qkv(qkv, n_head, "qkv");
  const DType dt = qkv.dtype();
  ck.matrix_shape(out, dt, s.B * s.T, s.C, "out", "[B*Tq, C] for qkv " + qkv.str());
  ck.require(k_cache, dt, "k_cache");
  ck.require(v_cache, dt, "v_cache");
  if (k_cache.ndim() != 4 || k_cache.dim(0) != s.B || k_cache.dim(1) != s.n_head || k_cache.dim(3) != s.hs)
    ck.fail("k_cache " + k_cache.str() + " must be [B, n_head, max_T, head size] = [" + std::to_string(s.B) + ", " +
            std::to_string(s.n_head) + ", max_T, " + std::to_string(s.hs) + "]");
  if (v_cache.shape() != k_cache.shape())
    ck.fail("v_cache " + v_cache.str() + " must have the shape of k_cache " + k_cache.str());
  const std::int64_t max_t = k_cache.dim(2);
  if (position_offset < 0) ck.fail("position_offset must be >= 0, got " + std::to_string(position_offset));
  if (position_offset + s.T > max_t)
    ck.fail("positions [" + std::to_string(position_offset) + ", " + std::to_string(position_offset + s.T) +
            ") do not fit the cache of max_T = " + std::to_string(max_t) + " positions (k_cache " + k_cache.str() +
            ")");
  ck.disjoint(out, qkv, "out", "qkv");
  ck.disjoint(out, k_cache, "out", "k_cache");
  ck.disjoint(out, v_cache, "out", "v_cache");
  ck.disjoint(k_cache, qkv, "k_cache", "qkv");
  ck.disjoint(v_cache, qkv, "v_cache", "qkv");
  ck.disjoint(k_cache, v_cache, "k_cache", "v_cache");
  require_head_size(ck, s);
  require_int_sizes(ck, s);
  if (s.B * s.T == 0) return;
  cuda::attention_decode(ctx.stream(), dt, out.data(), k_cache.data(), v_cache.data(), qkv.data(),
                         static_cast<int>(s.B), static_cast<int>(s.T), static_cast<int>(s.n_head),
                         static_cast<int>(s.hs), max_t, position_offset);
  NEOX_CUDA_CHECK_LAUNCH();
}

}  // namespace neox::cuda
