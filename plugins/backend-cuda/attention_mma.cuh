// SPDX-License-Identifier: Apache-2.0
// Causal attention on the tensor cores (flash-attention 2 on mma.sync
// m16n8k16, bf16 or f16 operands, f32 accumulation) for the head sizes of
// the GPT-NeoX / Pythia family: 32, 64, 80, 96 and 128. Included by
// attention.cu, which calls these kernels for bf16 and f16 at those sizes and
// its CUDA-core kernels otherwise (f32, other head sizes, unaligned tensors).
//
// Work split: a block is 4 warps; each warp owns 16 rows of a 64-row tile
// (queries in the forward and dq kernels, keys in the dk/dv kernel) and
// walks the other side in tiles staged in shared memory. A warp computes a
// 16 x 8 block of scores per mma; scores stay in the mma's accumulator
// registers, and their layout (row g and g+8, columns 2t and 2t+1, with
// g = lane/4, t = lane%4) is also the layout of the A operand of the next
// product, so probabilities go from one mma to the next without shared memory.
//
//  * forward_kernel: out and lse of 64 queries against key tiles of 64,
//    online softmax in base 2; key tiles past the diagonal are skipped.
//  * dq_kernel: D = rowsum(dout * out) of its queries (written for dkdv),
//    then dq = scale * sum_j dS_j k_j with P and dP recomputed per key tile.
//  * dkdv_kernel: dk and dv of 64 keys over the query tiles at or after
//    them: dv = sum P^T dout, dk = scale * sum dS^T q.
// No atomics: every element of dqkv is written once, and the results do not
// depend on scheduling. Operand tiles that an mma reads "by column" (V in
// P V; K, Q and dout in the gradient products) are stored transposed in
// shared memory when loaded, so every fragment load is one 32-bit word; row
// strides are padded by 8 elements so that a warp's fragment loads hit 32
// different banks. Rows past T are zero in shared memory and masked.
//
// P and dS are rounded to the operand dtype for their products (as in
// FlashAttention); the row sums, the softmax state and every accumulator are
// f32. Like attention.cu, plain C++ apart from the CUDA builtins and three
// primitives (mma, exp2, 16-byte loads), so that the host emulation of
// tests/cuda-emulation can run it: there the mma is computed from the whole
// warp's fragments.
#pragma once

#include <cstring>
#include <type_traits>

namespace neox::cuda::mma_attention {

constexpr int kThreads = 128;  // 4 warps
constexpr int kRows = 64;      // rows of a block's own tile (16 per warp)

inline bool supported_head_size(int hs) { return hs == 32 || hs == 64 || hs == 80 || hs == 96 || hs == 128; }

// ------------------------------------------------------------- primitives

struct alignas(16) Vec16 {
  std::uint32_t w[4];
};

template <typename T>
__device__ __forceinline__ std::uint32_t pack2(float lo, float hi);

#ifdef ATTN_EMU
template <>
inline std::uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  return std::uint32_t(neox::float_to_bf16(lo)) | (std::uint32_t(neox::float_to_bf16(hi)) << 16);
}
template <>
inline std::uint32_t pack2<__half>(float lo, float hi) {
  return std::uint32_t(neox::float_to_f16(lo)) | (std::uint32_t(neox::float_to_f16(hi)) << 16);
}
template <typename T>
inline float unpack(std::uint16_t x) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    return neox::bf16_to_float(x);
  else
    return neox::f16_to_float(x);
}
inline float fast_exp2(float x) { return std::exp2(x); }
inline float fast_log2(float x) { return std::log2(x); }

// c += a b for the warp's 16x16 a and 16x8 b fragments: every lane hands in
// its registers and computes its own four results from the whole warp's.
template <typename T>
inline void mma16816(float (&c)[4], const std::uint32_t (&a)[4], const std::uint32_t (&b)[2]) {
  struct Regs {
    std::uint32_t a[4], b[2];
  };
  const Regs mine{{a[0], a[1], a[2], a[3]}, {b[0], b[1]}};
  unsigned char all[32 * emu::kShareBytes];
  emu::warp_share(&mine, sizeof mine, all);
  float A[16][16], B[16][8];
  auto lo = [](std::uint32_t w) { return unpack<T>(std::uint16_t(w & 0xffffu)); };
  auto hi = [](std::uint32_t w) { return unpack<T>(std::uint16_t(w >> 16)); };
  for (int l = 0; l < 32; ++l) {
    Regs r;
    std::memcpy(&r, all + l * emu::kShareBytes, sizeof r);
    const int g = l >> 2, t = l & 3;
    A[g][2 * t] = lo(r.a[0]);
    A[g][2 * t + 1] = hi(r.a[0]);
    A[g + 8][2 * t] = lo(r.a[1]);
    A[g + 8][2 * t + 1] = hi(r.a[1]);
    A[g][2 * t + 8] = lo(r.a[2]);
    A[g][2 * t + 9] = hi(r.a[2]);
    A[g + 8][2 * t + 8] = lo(r.a[3]);
    A[g + 8][2 * t + 9] = hi(r.a[3]);
    B[2 * t][g] = lo(r.b[0]);
    B[2 * t + 1][g] = hi(r.b[0]);
    B[2 * t + 8][g] = lo(r.b[1]);
    B[2 * t + 9][g] = hi(r.b[1]);
  }
  const int lane = static_cast<int>(threadIdx.x) % 32, g = lane >> 2, t = lane & 3;
  for (int e = 0; e < 4; ++e) {
    const int row = g + (e >= 2 ? 8 : 0), col = 2 * t + (e & 1);
    float acc = c[e];
    for (int k = 0; k < 16; ++k) acc += A[row][k] * B[k][col];
    c[e] = acc;
  }
}
#else
template <>
__device__ __forceinline__ std::uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // lo in the low half
  return *reinterpret_cast<std::uint32_t*>(&v);
}
template <>
__device__ __forceinline__ std::uint32_t pack2<__half>(float lo, float hi) {
  __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<std::uint32_t*>(&v);
}
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float fast_log2(float x) { return __log2f(x); }

template <typename T>
__device__ __forceinline__ void mma16816(float (&c)[4], const std::uint32_t (&a)[4], const std::uint32_t (&b)[2]) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
}
#endif

// The block's dynamic shared memory as `float name[]` (16-byte aligned).
#ifdef ATTN_EMU
#define NEOX_MMA_SHARED_MEMORY(name) float* const name = emu::smem_ptr
#else
#define NEOX_MMA_SHARED_MEMORY(name) extern __shared__ __align__(16) float name[]
#endif

__device__ __forceinline__ std::uint32_t ld32(const std::uint16_t* p) {
  return *reinterpret_cast<const std::uint32_t*>(p);
}

// The A fragment of the 16x16 block at (r0, c0) of row-major m (stride ld).
__device__ __forceinline__ void load_a(std::uint32_t (&a)[4], const std::uint16_t* m, int r0, int c0, int ld, int g,
                                       int t) {
  const std::uint16_t* p = m + (r0 + g) * ld + c0 + 2 * t;
  a[0] = ld32(p);
  a[1] = ld32(p + 8 * ld);
  a[2] = ld32(p + 8);
  a[3] = ld32(p + 8 * ld + 8);
}

// The B fragment (k x n = 16 x 8) with B[k][n] = m[n0 + n][k0 + k]: m holds
// the product's columns as rows (stride ld).
__device__ __forceinline__ void load_b(std::uint32_t (&b)[2], const std::uint16_t* m, int n0, int k0, int ld, int g,
                                       int t) {
  const std::uint16_t* p = m + (n0 + g) * ld + k0 + 2 * t;
  b[0] = ld32(p);
  b[1] = ld32(p + 8);
}

// The A fragments of a 16x16 product operand from four accumulator blocks
// of 16x8 (columns 16kk .. 16kk+15), rounded to T.
template <typename T>
__device__ __forceinline__ void acc_to_a(std::uint32_t (&a)[4], const float (&lo)[4], const float (&hi)[4]) {
  a[0] = pack2<T>(lo[0], lo[1]);
  a[1] = pack2<T>(lo[2], lo[3]);
  a[2] = pack2<T>(hi[0], hi[1]);
  a[3] = pack2<T>(hi[2], hi[3]);
}

__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// Rows r0 .. r0+R-1 of a [T, stride] matrix (src points at row 0's first
// element of this head) into dst[R][LD] (row-major), and, when dst_t is
// given, transposed into dst_t[HS][LDT]. Rows at or past T are zero.
template <int R, int HS, int LD, int LDT>
__device__ __forceinline__ void load_rows(std::uint16_t* dst, std::uint16_t* dst_t, const std::uint16_t* src,
                                          std::int64_t stride, int r0, int T) {
  constexpr int kVecs = HS / 8;  // 16-byte vectors per row
  // Row-major copies: consecutive threads read one row (coalesced). Only a
  // transposed copy (LD == 1): consecutive threads take consecutive rows, so
  // that their 16-bit stores land in different banks.
  constexpr bool kByColumn = LD == 1;
  for (int i = static_cast<int>(threadIdx.x); i < R * kVecs; i += kThreads) {
    const int r = kByColumn ? i % R : i / kVecs, v = kByColumn ? i / R : i % kVecs;
    Vec16 x{{0u, 0u, 0u, 0u}};
    if (r0 + r < T) x = *reinterpret_cast<const Vec16*>(src + static_cast<std::int64_t>(r0 + r) * stride + v * 8);
    if (dst) *reinterpret_cast<Vec16*>(dst + r * LD + v * 8) = x;
    if (dst_t) {
#pragma unroll
      for (int e = 0; e < 8; ++e)
        dst_t[(v * 8 + e) * LDT + r] = static_cast<std::uint16_t>(x.w[e / 2] >> (16 * (e & 1)));
    }
  }
}

// ------------------------------------------------------------------ forward

struct ForwardArgs {
  const void* qkv;  // [B,T,3C]
  void* out;        // [B,T,C]
  float* lse;       // [B,H,T]
  int T, H;
  float scale_log2;  // log2(e) / sqrt(hs)
};

// grid (ceil(T/64), B*H); dynamic shared memory forward_smem<HS>().
template <int HS>
constexpr std::size_t forward_smem() {
  return (2 * kRows * (HS + 8) + HS * (kRows + 8)) * sizeof(std::uint16_t);
}

template <typename E, int HS>
__global__ void __launch_bounds__(kThreads) forward_kernel(const ForwardArgs a) {
  constexpr int BM = kRows, BN = 64, LD = HS + 8, LDT = BN + 8, KS = HS / 16, DT = HS / 8, NT = BN / 8;
  NEOX_MMA_SHARED_MEMORY(smem);
  std::uint16_t* const qs = reinterpret_cast<std::uint16_t*>(smem);  // [BM][LD]
  std::uint16_t* const ks = qs + BM * LD;                            // [BN][LD]
  std::uint16_t* const vt = ks + BN * LD;                            // [HS][LDT]
  const int lane = static_cast<int>(threadIdx.x) % 32, warp = static_cast<int>(threadIdx.x) / 32;
  const int g = lane >> 2, t = lane & 3;
  const int qt = static_cast<int>(gridDim.x) - 1 - static_cast<int>(blockIdx.x);  // the longest rows first
  const int bh = static_cast<int>(blockIdx.y), b = bh / a.H, h = bh % a.H;
  const int q0 = qt * BM, T = a.T;
  const std::int64_t C = static_cast<std::int64_t>(a.H) * HS, C3 = 3 * C;
  const std::uint16_t* const base = static_cast<const std::uint16_t*>(a.qkv) + static_cast<std::int64_t>(b) * T * C3 +
                                    static_cast<std::int64_t>(h) * HS;

  load_rows<BM, HS, LD, 1>(qs, nullptr, base, C3, q0, T);
  __syncthreads();
  std::uint32_t qf[KS][4];
#pragma unroll
  for (int kk = 0; kk < KS; ++kk) load_a(qf[kk], qs, warp * 16, kk * 16, LD, g, t);

  float o[DT][4];
#pragma unroll
  for (int d = 0; d < DT; ++d) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.0f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
  const int row0 = q0 + warp * 16 + g, row1 = row0 + 8;
  const int n_tiles = imin(q0 + BM - 1, T - 1) / BN + 1;
  for (int j = 0; j < n_tiles; ++j) {
    const int k0 = j * BN;
    __syncthreads();  // the previous tile is read
    load_rows<BN, HS, LD, 1>(ks, nullptr, base + C, C3, k0, T);
    load_rows<BN, HS, 1, LDT>(nullptr, vt, base + 2 * C, C3, k0, T);
    __syncthreads();

    float s[NT][4];
#pragma unroll
    for (int n = 0; n < NT; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < KS; ++kk)
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        std::uint32_t bb[2];
        load_b(bb, ks, n * 8, kk * 16, LD, g, t);
        mma16816<E>(s[n], qf[kk], bb);
      }

    const bool diagonal = k0 + BN - 1 > q0;  // some key of the tile is after some query
    float mx0 = m0, mx1 = m1;
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = s[n][e] * a.scale_log2;
        if (diagonal && k0 + n * 8 + 2 * t + (e & 1) > (e < 2 ? row0 : row1)) x = -INFINITY;
        s[n][e] = x;
        if (e < 2)
          mx0 = fmaxf(mx0, x);
        else
          mx1 = fmaxf(mx1, x);
      }
    mx0 = quad_max(mx0);
    mx1 = quad_max(mx1);
    // Rows with no key yet (only rows past T) keep a finite base: no NaN.
    const float base0 = mx0 == -INFINITY ? 0.0f : mx0, base1 = mx1 == -INFINITY ? 0.0f : mx1;
    const float c0 = fast_exp2(m0 - base0), c1 = fast_exp2(m1 - base1);
    m0 = mx0;
    m1 = mx1;
    l0 *= c0;
    l1 *= c1;
#pragma unroll
    for (int d = 0; d < DT; ++d) {
      o[d][0] *= c0;
      o[d][1] *= c0;
      o[d][2] *= c1;
      o[d][3] *= c1;
    }
#pragma unroll
    for (int n = 0; n < NT; ++n) {
      s[n][0] = fast_exp2(s[n][0] - base0);
      s[n][1] = fast_exp2(s[n][1] - base0);
      s[n][2] = fast_exp2(s[n][2] - base1);
      s[n][3] = fast_exp2(s[n][3] - base1);
      l0 += s[n][0] + s[n][1];
      l1 += s[n][2] + s[n][3];
    }
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      std::uint32_t pa[4];
      acc_to_a<E>(pa, s[2 * kk], s[2 * kk + 1]);
#pragma unroll
      for (int d = 0; d < DT; ++d) {
        std::uint32_t bb[2];
        load_b(bb, vt, d * 8, kk * 16, LDT, g, t);
        mma16816<E>(o[d], pa, bb);
      }
    }
  }
  l0 = quad_sum(l0);
  l1 = quad_sum(l1);
  const float inv0 = 1.0f / l0, inv1 = 1.0f / l1;
  std::uint16_t* const out =
      static_cast<std::uint16_t*>(a.out) + static_cast<std::int64_t>(b) * T * C + static_cast<std::int64_t>(h) * HS;
  constexpr float kLn2 = 0.69314718055994531f;
  if (row0 < T) {
#pragma unroll
    for (int d = 0; d < DT; ++d)
      *reinterpret_cast<std::uint32_t*>(out + static_cast<std::int64_t>(row0) * C + d * 8 + 2 * t) =
          pack2<E>(o[d][0] * inv0, o[d][1] * inv0);
    if (t == 0) a.lse[static_cast<std::int64_t>(bh) * T + row0] = (m0 + fast_log2(l0)) * kLn2;
  }
  if (row1 < T) {
#pragma unroll
    for (int d = 0; d < DT; ++d)
      *reinterpret_cast<std::uint32_t*>(out + static_cast<std::int64_t>(row1) * C + d * 8 + 2 * t) =
          pack2<E>(o[d][2] * inv1, o[d][3] * inv1);
    if (t == 0) a.lse[static_cast<std::int64_t>(bh) * T + row1] = (m1 + fast_log2(l1)) * kLn2;
  }
}

// ----------------------------------------------------------------- backward

struct BackwardArgs {
  const void* qkv;   // [B,T,3C]
  const void* out;   // [B,T,C]
  const void* dout;  // [B,T,C]
  const float* lse;  // [B,H,T]
  float* D;          // [B,H,T], written by dq_kernel, read by dkdv_kernel
  void* dqkv;        // [B,T,3C]
  int T, H;
  float scale, scale_log2;
};

// Key tiles of the dq kernel and query tiles of the dk/dv kernel: 64 rows up
// to head size 64, 32 above (registers).
template <int HS>
constexpr int kOtherTile = HS <= 64 ? 64 : 32;

template <int HS>
constexpr std::size_t dq_smem() {
  constexpr int BN = kOtherTile<HS>;
  return (2 * kRows * (HS + 8) + 2 * BN * (HS + 8) + HS * (BN + 8)) * sizeof(std::uint16_t) + kRows * sizeof(float);
}

// grid (ceil(T/64), B*H).
template <typename E, int HS>
__global__ void __launch_bounds__(kThreads) dq_kernel(const BackwardArgs a) {
  constexpr int BM = kRows, BN = kOtherTile<HS>, LD = HS + 8, LDT = BN + 8, KS = HS / 16, DT = HS / 8, NT = BN / 8;
  NEOX_MMA_SHARED_MEMORY(smem);
  std::uint16_t* const qs = reinterpret_cast<std::uint16_t*>(smem);  // [BM][LD]
  std::uint16_t* const dos = qs + BM * LD;                           // [BM][LD]
  std::uint16_t* const ks = dos + BM * LD;                           // [BN][LD]
  std::uint16_t* const vs = ks + BN * LD;                            // [BN][LD]
  std::uint16_t* const kt = vs + BN * LD;                            // [HS][LDT]
  float* const dsum = reinterpret_cast<float*>(kt + HS * LDT);       // [BM]
  const int lane = static_cast<int>(threadIdx.x) % 32, warp = static_cast<int>(threadIdx.x) / 32;
  const int g = lane >> 2, t = lane & 3;
  const int qt = static_cast<int>(gridDim.x) - 1 - static_cast<int>(blockIdx.x);
  const int bh = static_cast<int>(blockIdx.y), b = bh / a.H, h = bh % a.H;
  const int q0 = qt * BM, T = a.T;
  const std::int64_t C = static_cast<std::int64_t>(a.H) * HS, C3 = 3 * C;
  const std::int64_t head = static_cast<std::int64_t>(h) * HS;
  const std::uint16_t* const base =
      static_cast<const std::uint16_t*>(a.qkv) + static_cast<std::int64_t>(b) * T * C3 + head;
  const std::uint16_t* const dout =
      static_cast<const std::uint16_t*>(a.dout) + static_cast<std::int64_t>(b) * T * C + head;
  const std::uint16_t* const out =
      static_cast<const std::uint16_t*>(a.out) + static_cast<std::int64_t>(b) * T * C + head;

  load_rows<BM, HS, LD, 1>(qs, nullptr, base, C3, q0, T);
  load_rows<BM, HS, LD, 1>(dos, nullptr, dout, C, q0, T);
  __syncthreads();
  // D of the warp's 16 rows: dout . out, one row at a time over the warp.
  for (int r = warp * 16; r < warp * 16 + 16; ++r) {
    float x = 0.0f;
    if (q0 + r < T)
      for (int d = lane; d < HS; d += 32)
        x += to_float(reinterpret_cast<const E*>(dos)[r * LD + d]) *
             to_float(reinterpret_cast<const E*>(out)[static_cast<std::int64_t>(q0 + r) * C + d]);
#pragma unroll
    for (int o = 16; o > 0; o /= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
    if (lane == 0) {
      dsum[r] = x;
      if (q0 + r < T) a.D[static_cast<std::int64_t>(bh) * T + q0 + r] = x;
    }
  }
  std::uint32_t qf[KS][4], df[KS][4];
#pragma unroll
  for (int kk = 0; kk < KS; ++kk) {
    load_a(qf[kk], qs, warp * 16, kk * 16, LD, g, t);
    load_a(df[kk], dos, warp * 16, kk * 16, LD, g, t);
  }
  __syncthreads();  // dsum
  constexpr float kLog2e = 1.4426950408889634f;
  const int row0 = q0 + warp * 16 + g, row1 = row0 + 8;
  const float D0 = dsum[warp * 16 + g], D1 = dsum[warp * 16 + g + 8];
  const float lse0 = row0 < T ? a.lse[static_cast<std::int64_t>(bh) * T + row0] * kLog2e : 0.0f;
  const float lse1 = row1 < T ? a.lse[static_cast<std::int64_t>(bh) * T + row1] * kLog2e : 0.0f;

  float dq[DT][4];
#pragma unroll
  for (int d = 0; d < DT; ++d) dq[d][0] = dq[d][1] = dq[d][2] = dq[d][3] = 0.0f;
  const int n_tiles = imin(q0 + BM - 1, T - 1) / BN + 1;
  for (int j = 0; j < n_tiles; ++j) {
    const int k0 = j * BN;
    __syncthreads();
    load_rows<BN, HS, LD, LDT>(ks, kt, base + C, C3, k0, T);
    load_rows<BN, HS, LD, 1>(vs, nullptr, base + 2 * C, C3, k0, T);
    __syncthreads();
    float s[NT][4], dp[NT][4];
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[n][e] = dp[n][e] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < KS; ++kk)
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        std::uint32_t bb[2];
        load_b(bb, ks, n * 8, kk * 16, LD, g, t);
        mma16816<E>(s[n], qf[kk], bb);
        load_b(bb, vs, n * 8, kk * 16, LD, g, t);
        mma16816<E>(dp[n], df[kk], bb);
      }
    const bool diagonal = k0 + BN - 1 > q0;
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const bool second = e >= 2;
        float p = fast_exp2(s[n][e] * a.scale_log2 - (second ? lse1 : lse0));
        if (diagonal && k0 + n * 8 + 2 * t + (e & 1) > (second ? row1 : row0)) p = 0.0f;
        s[n][e] = p * (dp[n][e] - (second ? D1 : D0));  // dS
      }
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      std::uint32_t sa[4];
      acc_to_a<E>(sa, s[2 * kk], s[2 * kk + 1]);
#pragma unroll
      for (int d = 0; d < DT; ++d) {
        std::uint32_t bb[2];
        load_b(bb, kt, d * 8, kk * 16, LDT, g, t);
        mma16816<E>(dq[d], sa, bb);
      }
    }
  }
  std::uint16_t* const dqkv = static_cast<std::uint16_t*>(a.dqkv) + static_cast<std::int64_t>(b) * T * C3 + head;
#pragma unroll
  for (int d = 0; d < DT; ++d) {
    if (row0 < T)
      *reinterpret_cast<std::uint32_t*>(dqkv + static_cast<std::int64_t>(row0) * C3 + d * 8 + 2 * t) =
          pack2<E>(dq[d][0] * a.scale, dq[d][1] * a.scale);
    if (row1 < T)
      *reinterpret_cast<std::uint32_t*>(dqkv + static_cast<std::int64_t>(row1) * C3 + d * 8 + 2 * t) =
          pack2<E>(dq[d][2] * a.scale, dq[d][3] * a.scale);
  }
}

template <int HS>
constexpr std::size_t dkdv_smem() {
  constexpr int BM = kOtherTile<HS>;
  return (2 * kRows * (HS + 8) + 2 * BM * (HS + 8) + 2 * HS * (BM + 8)) * sizeof(std::uint16_t) +
         2 * BM * sizeof(float);
}

// grid (ceil(T/64), B*H): block x owns keys 64x .. 64x+63 (the first keys,
// with the most queries after them, are scheduled first).
template <typename E, int HS>
__global__ void __launch_bounds__(kThreads) dkdv_kernel(const BackwardArgs a) {
  constexpr int BN = kRows, BM = kOtherTile<HS>, LD = HS + 8, LDT = BM + 8, KS = HS / 16, DT = HS / 8, MT = BM / 8;
  NEOX_MMA_SHARED_MEMORY(smem);
  std::uint16_t* const ks = reinterpret_cast<std::uint16_t*>(smem);  // [BN][LD]
  std::uint16_t* const vs = ks + BN * LD;                            // [BN][LD]
  std::uint16_t* const qs = vs + BN * LD;                            // [BM][LD]
  std::uint16_t* const dos = qs + BM * LD;                           // [BM][LD]
  std::uint16_t* const qt = dos + BM * LD;                           // [HS][LDT]
  std::uint16_t* const dot = qt + HS * LDT;                          // [HS][LDT]
  float* const lse_s = reinterpret_cast<float*>(dot + HS * LDT);     // [BM], log2 units
  float* const d_s = lse_s + BM;                                     // [BM]
  const int lane = static_cast<int>(threadIdx.x) % 32, warp = static_cast<int>(threadIdx.x) / 32;
  const int g = lane >> 2, t = lane & 3;
  const int k0 = static_cast<int>(blockIdx.x) * BN;
  const int bh = static_cast<int>(blockIdx.y), b = bh / a.H, h = bh % a.H;
  const int T = a.T;
  const std::int64_t C = static_cast<std::int64_t>(a.H) * HS, C3 = 3 * C;
  const std::int64_t head = static_cast<std::int64_t>(h) * HS;
  const std::uint16_t* const base =
      static_cast<const std::uint16_t*>(a.qkv) + static_cast<std::int64_t>(b) * T * C3 + head;
  const std::uint16_t* const dout =
      static_cast<const std::uint16_t*>(a.dout) + static_cast<std::int64_t>(b) * T * C + head;
  constexpr float kLog2e = 1.4426950408889634f;

  load_rows<BN, HS, LD, 1>(ks, nullptr, base + C, C3, k0, T);
  load_rows<BN, HS, LD, 1>(vs, nullptr, base + 2 * C, C3, k0, T);

  float dk[DT][4], dv[DT][4];
#pragma unroll
  for (int d = 0; d < DT; ++d)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[d][e] = dv[d][e] = 0.0f;
  const int key0 = k0 + warp * 16 + g, key1 = key0 + 8;
  const int n_tiles = (T - 1) / BM + 1;
  for (int i = k0 / BM; i < n_tiles; ++i) {
    const int i0 = i * BM;
    __syncthreads();
    load_rows<BM, HS, LD, LDT>(qs, qt, base, C3, i0, T);
    load_rows<BM, HS, LD, LDT>(dos, dot, dout, C, i0, T);
    for (int r = static_cast<int>(threadIdx.x); r < BM; r += kThreads) {
      const bool in = i0 + r < T;
      lse_s[r] = in ? a.lse[static_cast<std::int64_t>(bh) * T + i0 + r] * kLog2e : 0.0f;
      d_s[r] = in ? a.D[static_cast<std::int64_t>(bh) * T + i0 + r] : 0.0f;
    }
    __syncthreads();
    float s[MT][4], dp[MT][4];  // transposed: rows are the warp's keys, columns queries
#pragma unroll
    for (int n = 0; n < MT; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[n][e] = dp[n][e] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < KS; ++kk) {
      std::uint32_t ka[4], va[4];
      load_a(ka, ks, warp * 16, kk * 16, LD, g, t);
      load_a(va, vs, warp * 16, kk * 16, LD, g, t);
#pragma unroll
      for (int n = 0; n < MT; ++n) {
        std::uint32_t bb[2];
        load_b(bb, qs, n * 8, kk * 16, LD, g, t);
        mma16816<E>(s[n], ka, bb);
        load_b(bb, dos, n * 8, kk * 16, LD, g, t);
        mma16816<E>(dp[n], va, bb);
      }
    }
    const bool diagonal = i0 < k0 + BN - 1;  // some query of the tile is before some key
    const bool tail = i0 + BM > T;
#pragma unroll
    for (int n = 0; n < MT; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int col = n * 8 + 2 * t + (e & 1), query = i0 + col;
        float p = fast_exp2(s[n][e] * a.scale_log2 - lse_s[col]);
        if ((diagonal && query < (e < 2 ? key0 : key1)) || (tail && query >= T)) p = 0.0f;
        s[n][e] = p;                           // P^T
        dp[n][e] = p * (dp[n][e] - d_s[col]);  // dS^T
      }
#pragma unroll
    for (int kk = 0; kk < BM / 16; ++kk) {
      std::uint32_t pa[4], sa[4];
      acc_to_a<E>(pa, s[2 * kk], s[2 * kk + 1]);
      acc_to_a<E>(sa, dp[2 * kk], dp[2 * kk + 1]);
#pragma unroll
      for (int d = 0; d < DT; ++d) {
        std::uint32_t bb[2];
        load_b(bb, dot, d * 8, kk * 16, LDT, g, t);
        mma16816<E>(dv[d], pa, bb);
        load_b(bb, qt, d * 8, kk * 16, LDT, g, t);
        mma16816<E>(dk[d], sa, bb);
      }
    }
  }
  std::uint16_t* const dqkv = static_cast<std::uint16_t*>(a.dqkv) + static_cast<std::int64_t>(b) * T * C3 + head;
#pragma unroll
  for (int d = 0; d < DT; ++d) {
    if (key0 < T) {
      std::uint16_t* p = dqkv + static_cast<std::int64_t>(key0) * C3 + d * 8 + 2 * t;
      *reinterpret_cast<std::uint32_t*>(p + C) = pack2<E>(dk[d][0] * a.scale, dk[d][1] * a.scale);
      *reinterpret_cast<std::uint32_t*>(p + 2 * C) = pack2<E>(dv[d][0], dv[d][1]);
    }
    if (key1 < T) {
      std::uint16_t* p = dqkv + static_cast<std::int64_t>(key1) * C3 + d * 8 + 2 * t;
      *reinterpret_cast<std::uint32_t*>(p + C) = pack2<E>(dk[d][2] * a.scale, dk[d][3] * a.scale);
      *reinterpret_cast<std::uint32_t*>(p + 2 * C) = pack2<E>(dv[d][2], dv[d][3]);
    }
  }
}

}  // namespace neox::cuda::mma_attention
