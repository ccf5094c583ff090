// SPDX-License-Identifier: Apache-2.0
// Rotary embedding: the SDK's argument checks (neox/kernel_contract.h) and the cos/sin
// tables. A table is built on the host with exactly the cpu backend's
// arithmetic — inv_freq[i] = 1 / base^(2i / rotary_dims) in float, then
// angle = position * inv_freq[i], cos and sin in double — uploaded once and
// cached per (rotary_dims, base), covering positions [0, 2^k) (or, for very
// long tables, exactly the positions of the call).
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "launch.h"
#include "neox/kernel_contract.h"
#include "ops.h"

namespace neox::cuda {
namespace {

constexpr std::size_t kMaxTables = 8;
constexpr std::int64_t kMinPositions = 256;
constexpr std::size_t kMaxPow2TableBytes = std::size_t{64} << 20;

// The device table for positions [offset, offset + T): a pointer to its first row.
const double* rotary_table(Context& ctx, int rotary_dims, float base, std::int64_t offset, std::int64_t T) {
  const std::int64_t half = rotary_dims / 2;
  const std::int64_t end = offset + T;
  RotaryTable* same_key = nullptr;
  for (auto& e : ctx.rotary_tables) {
    if (e.rotary_dims != rotary_dims || std::bit_cast<std::uint32_t>(e.base) != std::bit_cast<std::uint32_t>(base))
      continue;
    if (e.start <= offset && end <= e.start + e.count) return e.table.as<double>() + (offset - e.start) * half * 2;
    same_key = &e;
  }
  RotaryTable fresh;
  fresh.rotary_dims = rotary_dims;
  fresh.base = base;
  const auto pow2 = static_cast<std::int64_t>(std::bit_ceil(static_cast<std::uint64_t>(std::max(end, kMinPositions))));
  if (static_cast<std::size_t>(pow2 * half * 2) * sizeof(double) <= kMaxPow2TableBytes) {
    fresh.start = 0;
    fresh.count = pow2;
  } else {
    fresh.start = offset;
    fresh.count = T;
  }
  const std::vector<double> host = rotary_cos_sin_table(fresh.start, fresh.count, rotary_dims, base);
  fresh.table = ctx.temp(host.size() * sizeof(double));
  ctx.upload(fresh.table.get(), host.data(), host.size() * sizeof(double));
  // Replacing a table frees the old one into the cache: kernels queued before
  // still read it in stream order, before anything can reuse the block.
  if (same_key) {
    *same_key = std::move(fresh);
    return same_key->table.as<double>() + (offset - same_key->start) * half * 2;
  }
  if (ctx.rotary_tables.size() >= kMaxTables) ctx.rotary_tables.erase(ctx.rotary_tables.begin());
  ctx.rotary_tables.push_back(std::move(fresh));
  const RotaryTable& e = ctx.rotary_tables.back();
  return e.table.as<double>() + (offset - e.start) * half * 2;
}

void rotary(Context& ctx, const QkvShape& s, Tensor& qkv, int rotary_dims, float base, std::int64_t position_offset,
            double sign) {
  if (rotary_dims == 0 || qkv.numel() == 0) return;
  const double* table = rotary_table(ctx, rotary_dims, base, position_offset, s.T);
  launch_rotary(Launch{ctx.stream(), ctx.max_blocks()}, s.dtype, qkv.data(), table, s.B, s.T, s.C, s.n_head,
                rotary_dims, sign);
}

}  // namespace

void rotary_forward(Context& ctx, Tensor& qkv, int n_head, int rotary_dims, float base, std::int64_t position_offset) {
  const QkvShape s = kernel_check::rotary_forward(ctx.device(), qkv, n_head, rotary_dims, base, position_offset);
  rotary(ctx, s, qkv, rotary_dims, base, position_offset, +1.0);
}

void rotary_backward(Context& ctx, Tensor& dqkv, int n_head, int rotary_dims, float base,
                     std::int64_t position_offset) {
  const QkvShape s = kernel_check::rotary_backward(ctx.device(), dqkv, n_head, rotary_dims, base, position_offset);
  rotary(ctx, s, dqkv, rotary_dims, base, position_offset, -1.0);
}

}  // namespace neox::cuda
