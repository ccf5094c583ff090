// SPDX-License-Identifier: Apache-2.0
// CRC32C (Castagnoli): the checksum of TensorBoard's TFRecord framing and of
// checkpoint files. Uses the SSE4.2 crc32 instruction where the CPU has it
// (checked at run time) and slicing-by-8 tables elsewhere; both give the
// same values. docs/performance.md has the throughput of each.
#pragma once

#include <cstddef>
#include <cstdint>

#include "neox/export.h"

namespace neox {

// CRC32C (polynomial 0x1EDC6F41, reflected, init and final xor 0xFFFFFFFF):
// crc32c("123456789") == 0xE3069283.
NEOX_API std::uint32_t crc32c(const void* data, std::size_t size);

// Continues a CRC over more data: crc32c_extend(crc32c(a), b) == crc32c(a + b),
// and crc32c_extend(0, x) == crc32c(x).
NEOX_API std::uint32_t crc32c_extend(std::uint32_t crc, const void* data, std::size_t size);

// "sse4.2" or "slicing-by-8": what crc32c() uses on this machine.
NEOX_API const char* crc32c_implementation();

// The slicing-by-8 implementation itself, whatever the CPU (for the tests
// and the benchmark, which compare both).
NEOX_API std::uint32_t crc32c_extend_portable(std::uint32_t crc, const void* data, std::size_t size);

}  // namespace neox
