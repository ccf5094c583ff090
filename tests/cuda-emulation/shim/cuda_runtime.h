// SPDX-License-Identifier: Apache-2.0
// Host emulation of the CUDA builtins attention.cu (and attention_mma.cuh) uses: blocks run one after
// another; the threads of a block are fibers (ucontext) switched only at
// __syncthreads and __shfl_xor_sync, which are real barriers (block-wide, and
// warp-wide twice per shuffle). Deadlocks (a barrier some threads never
// reach, a shuffle some lanes of a warp skip) abort. Shared memory is
// poisoned with NaN before each block and checked past its size after.
#pragma once
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
typedef struct CUstream_st* cudaStream_t;
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorInvalidConfiguration = 9 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
inline const char* cudaGetErrorString(cudaError_t e) {
  return e == cudaSuccess ? "no error" : e == cudaErrorInvalidValue ? "invalid argument" : "invalid configuration";
}

namespace emu {

[[noreturn]] inline void die(const char* what) {
  std::fprintf(stderr, "EMU FAILURE: %s\n", what);
  std::abort();
}

constexpr std::size_t kSmemFloats = 1 << 16;    // 256 KiB
constexpr std::uint32_t kPoison = 0x7fc0deadu;  // a NaN
inline float* smem_ptr = nullptr;               // set by the test to the kernels' smem array
inline int schedule_mode = 0;                   // 0 forward, 1 reverse, 2 random per round
inline std::mt19937 rng(1234);
inline cudaError_t last_error = cudaSuccess;
inline std::map<const void*, int> max_dyn_smem;
inline long launches = 0;

struct Fiber {
  ucontext_t ctx;
  std::vector<char> stack;
  uint3 tid;
  bool done = false;
  const std::uint64_t* wait_gen = nullptr;
  std::uint64_t wait_val = 0;
};

struct Block {
  std::vector<Fiber> fibers;
  int nthreads = 0;
  std::uint64_t block_gen = 0;
  int block_count = 0;
  std::vector<std::uint64_t> warp_gen;
  std::vector<int> warp_count, warp_size;
  std::vector<float> slot;
  std::vector<int> offs;
  std::vector<unsigned char> share;
  std::uint64_t events = 0;
  int cur = -1;
  ucontext_t sched;
  std::function<void()>* body = nullptr;
};

inline Block* blk = nullptr;
inline uint3 g_block, g_grid_u, g_blockdim_u;

inline uint3& cur_tid() { return blk->fibers[blk->cur].tid; }

inline void yield_wait(const std::uint64_t* gen) {
  Fiber& f = blk->fibers[blk->cur];
  f.wait_gen = gen;
  f.wait_val = *gen;
  swapcontext(&f.ctx, &blk->sched);
}

inline void syncthreads() {
  blk->events++;
  if (++blk->block_count == blk->nthreads) {
    blk->block_count = 0;
    blk->block_gen++;
    return;
  }
  yield_wait(&blk->block_gen);
}

inline int linear_tid() {
  const uint3& t = cur_tid();
  return static_cast<int>((t.z * g_blockdim_u.y + t.y) * g_blockdim_u.x + t.x);
}

inline void warp_barrier(int w) {
  blk->events++;
  if (++blk->warp_count[w] == blk->warp_size[w]) {
    blk->warp_count[w] = 0;
    blk->warp_gen[w]++;
    return;
  }
  yield_wait(&blk->warp_gen[w]);
}

inline float shfl_xor(unsigned mask, float v, int o) {
  if (mask != 0xffffffffu) die("shuffle mask is not the full warp");
  if (o < 1 || o > 31) die("shuffle offset out of range");
  const int t = linear_tid(), w = t / 32, lane = t % 32;
  if (blk->warp_size[w] != 32) die("shuffle in a partial warp");
  blk->slot[w * 32 + lane] = v;
  blk->offs[w * 32 + lane] = o;
  warp_barrier(w);
  if (blk->offs[w * 32 + (lane ^ o)] != o) die("lanes of a warp shuffle with different offsets");
  const float r = blk->slot[w * 32 + (lane ^ o)];
  warp_barrier(w);
  return r;
}

// A warp collective for emulating warp-wide instructions (mma.sync): every
// lane hands in `bytes` (at most kShareBytes) and receives all 32 lanes'
// contributions, lane l's at all + l * kShareBytes.
constexpr std::size_t kShareBytes = 64;
inline void warp_share(const void* mine, std::size_t bytes, void* all) {
  if (bytes > kShareBytes) die("warp_share: too many bytes");
  const int t = linear_tid(), w = t / 32, lane = t % 32;
  if (blk->warp_size[w] != 32) die("warp collective in a partial warp");
  std::memcpy(&blk->share[(static_cast<std::size_t>(w) * 32 + lane) * kShareBytes], mine, bytes);
  warp_barrier(w);
  std::memcpy(all, &blk->share[static_cast<std::size_t>(w) * 32 * kShareBytes], 32 * kShareBytes);
  warp_barrier(w);
}

inline void trampoline() {
  (*blk->body)();
  Fiber& f = blk->fibers[blk->cur];
  f.done = true;
  blk->events++;
  // returns to uc_link = scheduler
}

inline cudaError_t launch(const void* fn, std::function<void()> body, dim3 grid, dim3 block, std::size_t smem) {
  ++launches;
  const long nthreads = static_cast<long>(block.x) * block.y * block.z;
  const auto it = max_dyn_smem.find(fn);
  const std::size_t allowed = std::max<std::size_t>(48 * 1024, it == max_dyn_smem.end() ? 0 : it->second);
  if (nthreads < 1 || nthreads > 1024 || grid.x < 1 || grid.y < 1 || grid.z < 1 || grid.x > 2147483647u ||
      grid.y > 65535 || grid.z > 65535 || smem > allowed || smem > kSmemFloats * 4) {
    std::fprintf(stderr, "EMU: invalid launch grid (%u,%u,%u) block %ld smem %zu allowed %zu\n", grid.x, grid.y, grid.z,
                 nthreads, smem, allowed);
    last_error = cudaErrorInvalidConfiguration;
    return last_error;
  }
  g_grid_u = {grid.x, grid.y, grid.z};
  g_blockdim_u = {block.x, block.y, block.z};
  // blocks in a shuffled order (CUDA promises none)
  std::vector<std::uint64_t> order(static_cast<std::size_t>(grid.x) * grid.y * grid.z);
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), rng);
  for (std::uint64_t lin : order) {
    g_block = {static_cast<unsigned>(lin % grid.x), static_cast<unsigned>((lin / grid.x) % grid.y),
               static_cast<unsigned>(lin / (static_cast<std::uint64_t>(grid.x) * grid.y))};
    std::uint32_t* sm = reinterpret_cast<std::uint32_t*>(smem_ptr);
    for (std::size_t i = 0; i < kSmemFloats; ++i) sm[i] = kPoison;
    Block b;
    blk = &b;
    b.body = &body;
    b.nthreads = static_cast<int>(nthreads);
    const int nwarps = static_cast<int>((nthreads + 31) / 32);
    b.warp_gen.assign(nwarps, 0);
    b.warp_count.assign(nwarps, 0);
    b.warp_size.assign(nwarps, 32);
    if (nthreads % 32) b.warp_size.back() = static_cast<int>(nthreads % 32);
    b.slot.assign(nwarps * 32, 0.0f);
    b.offs.assign(nwarps * 32, 0);
    b.share.assign(static_cast<std::size_t>(nwarps) * 32 * kShareBytes, 0);
    b.fibers.resize(nthreads);
    for (long i = 0; i < nthreads; ++i) {
      Fiber& f = b.fibers[i];
      f.tid = {static_cast<unsigned>(i % block.x), static_cast<unsigned>((i / block.x) % block.y),
               static_cast<unsigned>(i / (block.x * block.y))};
      f.stack.resize(256 * 1024);
      getcontext(&f.ctx);
      f.ctx.uc_stack.ss_sp = f.stack.data();
      f.ctx.uc_stack.ss_size = f.stack.size();
      f.ctx.uc_link = &b.sched;
      makecontext(&f.ctx, trampoline, 0);
    }
    std::vector<int> idx(nthreads);
    for (long i = 0; i < nthreads; ++i) idx[i] = static_cast<int>(i);
    long alive = nthreads;
    while (alive > 0) {
      if (schedule_mode == 1) std::reverse(idx.begin(), idx.end());
      if (schedule_mode == 2) std::shuffle(idx.begin(), idx.end(), rng);
      bool resumed = false;
      for (int i : idx) {
        Fiber& f = b.fibers[i];
        if (f.done) continue;
        if (f.wait_gen && *f.wait_gen == f.wait_val) continue;
        f.wait_gen = nullptr;
        b.cur = i;
        resumed = true;
        swapcontext(&b.sched, &f.ctx);
        if (f.done) --alive;
      }
      if (schedule_mode == 1) std::reverse(idx.begin(), idx.end());
      if (!resumed && alive > 0) die("deadlock: threads wait at a barrier others never reach");
    }
    if (b.block_count != 0) die("block ended with threads waiting at __syncthreads");
    for (int w = 0; w < nwarps; ++w)
      if (b.warp_count[w] != 0) die("block ended inside a shuffle");
    for (std::size_t i = (smem + 3) / 4; i < kSmemFloats; ++i)
      if (sm[i] != kPoison) die("shared memory written beyond the launched size");
    blk = nullptr;
  }
  return cudaSuccess;
}

}  // namespace emu

#define threadIdx (emu::cur_tid())
#define blockIdx (emu::g_block)
#define blockDim (emu::g_blockdim_u)
#define gridDim (emu::g_grid_u)

inline void __syncthreads() { emu::syncthreads(); }
inline float __shfl_xor_sync(unsigned mask, float v, int o) { return emu::shfl_xor(mask, v, o); }

inline cudaError_t cudaGetLastError() {
  const cudaError_t e = emu::last_error;
  emu::last_error = cudaSuccess;
  return e;
}

template <class Args>
cudaError_t cudaFuncSetAttribute(void (*f)(Args), cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaErrorInvalidValue;
  if (value > 227 * 1024) return cudaErrorInvalidValue;  // sm_90 opt-in limit (sm_80: 163 KiB)
  emu::max_dyn_smem[reinterpret_cast<const void*>(f)] = value;
  return cudaSuccess;
}

template <class Args>
cudaError_t cudaLaunchKernel(void (*f)(Args), dim3 grid, dim3 block, void** args, std::size_t smem, cudaStream_t) {
  const Args a = *static_cast<const Args*>(args[0]);
  return emu::launch(
      reinterpret_cast<const void*>(f), [f, a] { f(a); }, grid, block, smem);
}
