// SPDX-License-Identifier: Apache-2.0
// CRC32C (crc32c.h). Checkpoints checksum every byte they save and load, so
// the speed matters: Boost.CRC's byte-at-a-time table ran at about 0.4 GB/s;
// slicing-by-8 (eight tables, eight bytes per step) is several times that,
// and the SSE4.2 crc32 instruction, eight bytes per instruction, faster
// still (docs/performance.md has the figures).
#include "neox/io/crc32c.h"

#include <array>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <nmmintrin.h>
#define NEOX_CRC32C_X86 1
#endif

namespace neox {

namespace {

constexpr std::uint32_t kPolyReflected = 0x82F63B78u;  // 0x1EDC6F41 bit-reversed

using Tables = std::array<std::array<std::uint32_t, 256>, 8>;

constexpr Tables make_tables() {
  Tables t{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kPolyReflected : c >> 1;
    t[0][i] = c;
  }
  for (std::uint32_t i = 0; i < 256; ++i)
    for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xff];
  return t;
}

constexpr Tables kTables = make_tables();

// Slicing-by-8 on the raw (un-inverted) register. Little-endian loads: the
// reflected CRC consumes the lowest byte first.
std::uint32_t update_portable(std::uint32_t c, const unsigned char* p, std::size_t n) {
  for (; n > 0 && (reinterpret_cast<std::uintptr_t>(p) & 7) != 0; --n) c = (c >> 8) ^ kTables[0][(c ^ *p++) & 0xff];
  for (; n >= 8; n -= 8, p += 8) {
    std::uint32_t lo, hi;
    std::memcpy(&lo, p, 4);
    std::memcpy(&hi, p + 4, 4);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    lo = __builtin_bswap32(lo);
    hi = __builtin_bswap32(hi);
#endif
    lo ^= c;
    c = kTables[7][lo & 0xff] ^ kTables[6][(lo >> 8) & 0xff] ^ kTables[5][(lo >> 16) & 0xff] ^ kTables[4][lo >> 24] ^
        kTables[3][hi & 0xff] ^ kTables[2][(hi >> 8) & 0xff] ^ kTables[1][(hi >> 16) & 0xff] ^ kTables[0][hi >> 24];
  }
  for (; n > 0; --n) c = (c >> 8) ^ kTables[0][(c ^ *p++) & 0xff];
  return c;
}

#ifdef NEOX_CRC32C_X86
// One crc32 instruction per 8 bytes. The instruction's latency (3 cycles)
// bounds a single chain; three independent chains over thirds of each block
// would go faster, but at several GB/s the checksum is already well ahead
// of the disks it guards.
__attribute__((target("sse4.2"))) std::uint32_t update_sse42(std::uint32_t c, const unsigned char* p, std::size_t n) {
  for (; n > 0 && (reinterpret_cast<std::uintptr_t>(p) & 7) != 0; --n) c = _mm_crc32_u8(c, *p++);
#if defined(__x86_64__)
  std::uint64_t c64 = c;
  for (; n >= 32; n -= 32, p += 32) {
    std::uint64_t v[4];
    std::memcpy(v, p, 32);
    c64 = _mm_crc32_u64(c64, v[0]);
    c64 = _mm_crc32_u64(c64, v[1]);
    c64 = _mm_crc32_u64(c64, v[2]);
    c64 = _mm_crc32_u64(c64, v[3]);
  }
  for (; n >= 8; n -= 8, p += 8) {
    std::uint64_t v;
    std::memcpy(&v, p, 8);
    c64 = _mm_crc32_u64(c64, v);
  }
  c = static_cast<std::uint32_t>(c64);
#endif
  for (; n > 0; --n) c = _mm_crc32_u8(c, *p++);
  return c;
}

bool have_sse42() {
  static const bool yes = __builtin_cpu_supports("sse4.2");
  return yes;
}
#endif

}  // namespace

std::uint32_t crc32c_extend_portable(std::uint32_t crc, const void* data, std::size_t size) {
  return ~update_portable(~crc, static_cast<const unsigned char*>(data), size);
}

std::uint32_t crc32c_extend(std::uint32_t crc, const void* data, std::size_t size) {
#ifdef NEOX_CRC32C_X86
  if (have_sse42()) return ~update_sse42(~crc, static_cast<const unsigned char*>(data), size);
#endif
  return crc32c_extend_portable(crc, data, size);
}

std::uint32_t crc32c(const void* data, std::size_t size) { return crc32c_extend(0, data, size); }

const char* crc32c_implementation() {
#ifdef NEOX_CRC32C_X86
  if (have_sse42()) return "sse4.2";
#endif
  return "slicing-by-8";
}

}  // namespace neox
