// SPDX-License-Identifier: Apache-2.0
// CpuBackend: 64-byte aligned host memory, memcpy, and the f32 kernels of
// this folder, which take bf16 and f16 activations through f32 temporaries
// (mixed_precision.h). Counts its allocations for memory_stats(). Options
// ([plugins.options.cpu]):
//   threads  threads for this backend's kernels; 0 keeps the defaults
//            (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS). OpenMP's count is set
//            around each kernel call; OpenBLAS's is process-wide, set when
//            the backend is made.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <string>
#include <utility>

#include "mixed_precision.h"
#include "neox/backend.h"
#include "neox/error.h"
#include "neox/options.h"
#include "neox/plugin.h"
#include "ops.h"

namespace neox::cpu {
namespace {

constexpr std::size_t kAlignment = 64;

// Sets the OpenMP thread count for the duration of one kernel call and
// restores it after. OpenMP's setting belongs to the calling thread, so this
// is safe from any thread and does not leak into the rest of the process.
class ScopedOmpThreads {
 public:
  explicit ScopedOmpThreads(int threads) : threads_(threads) {
    if (threads_ <= 0) return;
    saved_ = omp_get_max_threads();
    if (saved_ != threads_) omp_set_num_threads(threads_);
  }
  ~ScopedOmpThreads() {
    if (threads_ > 0 && saved_ != threads_) omp_set_num_threads(saved_);
  }
  ScopedOmpThreads(const ScopedOmpThreads&) = delete;
  ScopedOmpThreads& operator=(const ScopedOmpThreads&) = delete;

 private:
  int threads_;
  int saved_ = 0;
};

// The table entry for one op: runs it with the backend's thread count,
// through f32 temporaries for bf16 and f16 tensors (the op's roles,
// neox/kernel_contract.h, say which dtype each tensor may have), and turns any exception other than
// neox::Error into one naming the op, so that nothing else leaves the plugin.
template <typename R, typename... Args, std::size_t N>
std::function<R(Args...)> table_entry(const char* op, int threads, R (*fn)(Args...), const KernelArg (&roles)[N]) {
  return [op, threads, fn, &roles](Args... args) -> R {
    try {
      ScopedOmpThreads scope(threads);
      return call_mixed_precision<R, Args...>(op, fn, roles, std::forward<Args>(args)...);
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      throw Error(std::string(op) + ": " + e.what());
    }
  };
}

class CpuBackend final : public Backend {
 public:
  // OpenBLAS has one process-wide thread count (its own pool, not OpenMP's):
  // set it here, once, rather than around every call.
  explicit CpuBackend(int threads) : threads_(threads) {
    if (threads_ > 0) openblas_set_num_threads(threads_);
  }

  std::string name() const override { return "cpu"; }
  Device device() const override { return Device{DeviceType::cpu, 0}; }

  void* allocate(std::size_t bytes) override {
    // aligned_alloc wants a multiple of the alignment; never ask for 0.
    std::size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
    if (rounded == 0) rounded = kAlignment;
    if (rounded < bytes) throw Error("cpu backend: cannot allocate " + std::to_string(bytes) + " bytes");
    void* p = std::aligned_alloc(kAlignment, rounded);
    if (!p)
      throw Error("cpu backend: out of host memory allocating " + std::to_string(bytes) + " bytes (" +
                  std::to_string(static_cast<double>(bytes) / (1 << 30)) + " GiB)");
    const std::size_t now = in_use_.fetch_add(bytes, std::memory_order_relaxed) + bytes;
    std::size_t peak = peak_.load(std::memory_order_relaxed);
    while (now > peak && !peak_.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
    }
    return p;
  }

  void deallocate(void* ptr, std::size_t bytes) noexcept override {
    if (!ptr) return;
    std::free(ptr);
    in_use_.fetch_sub(bytes, std::memory_order_relaxed);
  }

  // Bytes as asked of allocate() (not rounded up to the alignment); the
  // backend keeps no cache, so what it holds is what is in use. The f32
  // temporaries of bf16/f16 calls are plain host memory, not counted.
  MemoryStats memory_stats() const override {
    MemoryStats s;
    s.in_use = in_use_.load(std::memory_order_relaxed);
    s.peak_in_use = std::max(peak_.load(std::memory_order_relaxed), s.in_use);
    s.reserved = s.in_use;
    return s;
  }
  void reset_peak_memory() override { peak_.store(in_use_.load(std::memory_order_relaxed), std::memory_order_relaxed); }

  void copy(void* dst, Device dst_device, const void* src, Device src_device, std::size_t bytes) override {
    if (!dst_device.is_cpu() || !src_device.is_cpu())
      throw Error("cpu backend: cannot copy " + std::to_string(bytes) + " bytes from " + device_name(src_device) +
                  " to " + device_name(dst_device) + " (the cpu backend only copies within host memory)");
    if (bytes == 0 || dst == src) return;
    if (!dst || !src) throw Error("cpu backend: copy of " + std::to_string(bytes) + " bytes with a null pointer");
    std::memmove(dst, src, bytes);
  }

  void synchronize() override {}

  void register_kernels(Kernels& table) override {
#define NEOX_CPU_OP(name) table.name = table_entry(#name, threads_, &cpu::name, kernel_args::name);
    NEOX_KERNEL_OPS(NEOX_CPU_OP)
#undef NEOX_CPU_OP
  }

 private:
  int threads_;
  std::atomic<std::size_t> in_use_{0};
  std::atomic<std::size_t> peak_{0};
};

Backend* make_cpu_backend(const Options& options) {
  try {
    int threads = static_cast<int>(options.get_int("threads", 0, 0, 4096));
    options.reject_unknown();
    return new CpuBackend(threads);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(std::string("cpu backend: ") + e.what());
  }
}

}  // namespace
}  // namespace neox::cpu

NEOX_PLUGIN(backend, "cpu", "1.0.0", "f32 kernels on the host (OpenBLAS matmul, OpenMP); bf16/f16 through f32",
            &neox::cpu::make_cpu_backend)
