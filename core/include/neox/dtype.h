// SPDX-License-Identifier: Apache-2.0
// Element types and devices.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace neox {

enum class DType : std::uint8_t { f32, bf16, f16, f64, i32, i64, u16 };

// Bytes per element.
constexpr std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32:
      return 4;
    case DType::bf16:
      return 2;
    case DType::f16:
      return 2;
    case DType::f64:
      return 8;
    case DType::i32:
      return 4;
    case DType::i64:
      return 8;
    case DType::u16:
      return 2;
  }
  return 0;
}

// "f32", "bf16", ... (the names used in configs and messages).
std::string_view dtype_name(DType t);
// Parses a name from dtype_name(); throws neox::Error naming `what` otherwise.
DType parse_dtype(std::string_view name, std::string_view what = "dtype");

enum class DeviceType : std::uint8_t { cpu, cuda };

struct Device {
  DeviceType type = DeviceType::cpu;
  int index = 0;
  bool operator==(const Device&) const = default;
  bool is_cpu() const { return type == DeviceType::cpu; }
};

std::string device_name(Device d);  // "cpu", "cuda:0"

// bfloat16 / float16 <-> float conversions (round to nearest even).
float bf16_to_float(std::uint16_t h);
std::uint16_t float_to_bf16(float f);
float f16_to_float(std::uint16_t h);
std::uint16_t float_to_f16(float f);

}  // namespace neox
