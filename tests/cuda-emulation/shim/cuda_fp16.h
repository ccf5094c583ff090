// SPDX-License-Identifier: Apache-2.0
#pragma once
#include <cstdint>
#include "neox/dtype.h"
struct __half {
  std::uint16_t x;
};
inline float __half2float(__half v) { return neox::f16_to_float(v.x); }
inline __half __float2half_rn(float f) { return {neox::float_to_f16(f)}; }
