// SPDX-License-Identifier: Apache-2.0
// attention_forward / attention_backward / attention_decode: the SDK's
// argument checks (neox/kernel_contract.h), the kernels' own limits (head
// size, int sizes), then the attention kernels of attention.cu.
#include <atomic>
#include <cstdint>
#include <limits>
#include <string>

#include "attention.h"
#include "cuda_check.h"
#include "neox/kernel_contract.h"
#include "ops.h"

#include <spdlog/spdlog.h>

namespace neox::cuda {
namespace {

// The attention kernels take int sizes.
void require_int_sizes(const KernelChecker& ck, const QkvShape& s, std::int64_t extra = 0) {
  constexpr std::int64_t kMax = std::numeric_limits<int>::max();
  if (s.B > kMax || s.T > kMax || s.n_head > kMax || s.hs > kMax || extra > kMax || s.B * s.n_head * s.T > kMax)
    ck.fail("B = " + std::to_string(s.B) + ", T = " + std::to_string(s.T) + ", n_head = " + std::to_string(s.n_head) +
            " exceed the attention kernels' int range");
}

void require_head_size(const KernelChecker& ck, const QkvShape& s) {
  if (s.hs > kMaxAttentionHeadSize)
    ck.fail("head size " + std::to_string(s.hs) + " (C = " + std::to_string(s.C) +
            ", n_head = " + std::to_string(s.n_head) + ") exceeds " + std::to_string(kMaxAttentionHeadSize) +
            ", the largest the cuda attention kernels support");
}

}  // namespace

void note_attention_fallback(const char* why) {
  static std::atomic<bool> warned{false};
  if (!warned.exchange(true))
    spdlog::warn("cuda attention: {}, so attention runs on the CUDA cores instead of the tensor cores (slower)", why);
}

void attention_forward(Context& ctx, Tensor& out, Tensor& lse, const Tensor& qkv, int n_head) {
  const QkvShape s = kernel_check::attention_forward(ctx.device(), out, lse, qkv, n_head);
  const KernelChecker ck("attention_forward", ctx.device());
  const DType dt = s.dtype;
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
  const QkvShape s = kernel_check::attention_backward(ctx.device(), dqkv, dout, qkv, out, lse, n_head);
  const KernelChecker ck("attention_backward", ctx.device());
  const DType dt = s.dtype;
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
  const QkvShape s = kernel_check::attention_decode(ctx.device(), out, k_cache, v_cache, qkv, n_head, position_offset);
  const KernelChecker ck("attention_decode", ctx.device());
  const DType dt = s.dtype;
  require_head_size(ck, s);
  require_int_sizes(ck, s);
  if (s.B * s.T == 0) return;
  cuda::attention_decode(ctx.stream(), dt, out.data(), k_cache.data(), v_cache.data(), qkv.data(),
                         static_cast<int>(s.B), static_cast<int>(s.T), static_cast<int>(s.n_head),
                         static_cast<int>(s.hs), s.max_T, position_offset);
  NEOX_CUDA_CHECK_LAUNCH();
}

}  // namespace neox::cuda
