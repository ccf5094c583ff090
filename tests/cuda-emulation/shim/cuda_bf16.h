// SPDX-License-Identifier: Apache-2.0
#pragma once
#include <cstdint>
#include "neox/dtype.h"
struct __nv_bfloat16 {
  std::uint16_t x;
};
inline float __bfloat162float(__nv_bfloat16 v) { return neox::bf16_to_float(v.x); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return {neox::float_to_bf16(f)}; }
