// SPDX-License-Identifier: Apache-2.0
// CpuBackend: 64-byte aligned host memory, memcpy, and the fp32 kernels of
// this folder. Options ([plugins.options.cpu]):
//   threads  threads for this backend's kernels; 0 keeps the defaults
//            (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS). OpenMP's count is set
//            around each kernel call; OpenBLAS's is process-wide, set when
//            the backend is made.
#include <cblas.h>
#include <omp.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <string>
#include <utility>

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

// The table entry for one op: runs it with the backend's thread count and
// turns any exception other than neox::Error into one naming the op, so that
// nothing else leaves the plugin.
template <typename R, typename... Args>
std::function<R(Args...)> table_entry(const char* op, int threads, R (*fn)(Args...)) {
  return [op, threads, fn](Args... args) -> R {
    try {
      ScopedOmpThreads scope(threads);
      return fn(std::forward<Args>(args)...);
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
    return p;
  }

  void deallocate(void* ptr, std::size_t /*bytes*/) noexcept override { std::free(ptr); }

  void copy(void* dst, Device dst_device, const void* src, Device src_device,
            std::size_t bytes) override {
    if (!dst_device.is_cpu() || !src_device.is_cpu())
      throw Error("cpu backend: cannot copy " + std::to_string(bytes) + " bytes from " +
                  device_name(src_device) + " to " + device_name(dst_device) +
                  " (the cpu backend only copies within host memory)");
    if (bytes == 0 || dst == src) return;
    if (!dst || !src) throw Error("cpu backend: copy of " + std::to_string(bytes) + " bytes with a null pointer");
    std::memmove(dst, src, bytes);
  }

  void synchronize() override {}

  void register_kernels(Kernels& table) override {
#define NEOX_CPU_OP(name) table.name = table_entry(#name, threads_, &cpu::name);
    NEOX_KERNEL_OPS(NEOX_CPU_OP)
#undef NEOX_CPU_OP
  }

 private:
  int threads_;
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

NEOX_PLUGIN(backend, "cpu", "1.0.0", "fp32 kernels on the host (OpenBLAS matmul, OpenMP)",
            &neox::cpu::make_cpu_backend)
