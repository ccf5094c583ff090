// SPDX-License-Identifier: Apache-2.0
// CudaBackend: one NVIDIA GPU. Memory through a caching allocator over
// cudaMalloc, one non-blocking stream for every kernel and copy, cuBLASLt
// for matmul and the kernels of this folder for everything else.
//
// Options ([plugins.options.cuda]):
//   device        the CUDA device index; default this process's local rank
//                 (neox::detect_launch: mpirun, srun, torchrun or LOCAL_RANK)
//                 modulo the visible devices, i.e. 0 outside a launcher
//   allow_tf32    let fp32 matmuls use TF32 tensor cores (default false: true fp32)
//   workspace_mb  cuBLASLt workspace in MiB (default 32)
//   attention_tensor_cores  bf16/f16 attention on the tensor cores at head
//                 sizes 32, 64, 80, 96, 128 (default true; false: CUDA cores)
//
// Without a usable GPU the factory throws neox::DeviceUnavailable. The
// plugin links the CUDA runtime statically, which loads the driver
// (libcuda.so.1) only when first used, so it loads on machines without one.
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "context.h"
#include "cuda_check.h"
#include "neox/backend.h"
#include "neox/error.h"
#include "neox/launch.h"
#include "neox/options.h"
#include "neox/plugin.h"
#include "ops.h"

namespace neox::cuda {
namespace {

// The table entry for one op: makes the device current, runs the op, and
// names the op in errors (CUDA failures carry only the call), turning any
// other exception into neox::Error so that nothing else leaves the plugin.
template <typename R, typename... Args>
std::function<R(Args...)> bind_op(const char* op, Context* ctx, R (*fn)(Context&, Args...)) {
  return [op, ctx, fn](Args... args) -> R {
    try {
      ctx->activate();
      return fn(*ctx, std::forward<Args>(args)...);
    } catch (const Error& e) {
      const std::string what = e.what();
      if (what.rfind("cuda backend: ", 0) == 0) throw Error(std::string(op) + ": " + what);
      throw;
    } catch (const std::exception& e) {
      throw Error(std::string(op) + ": " + e.what());
    }
  };
}

// Destroys the CUDA events of one time_runs call.
struct EventList {
  std::vector<cudaEvent_t> events;
  ~EventList() {
    for (cudaEvent_t e : events)
      if (e) (void)cudaEventDestroy(e);
  }
};

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, bool allow_tf32, std::size_t workspace_bytes, bool attention_tensor_cores)
      : ctx_(std::make_unique<Context>(device, allow_tf32, workspace_bytes)) {
    ctx_->set_attention_tensor_cores(attention_tensor_cores);
  }
  // ctx_'s destructor waits for the stream and frees everything; it never throws.
  ~CudaBackend() override = default;

  std::string name() const override { return "cuda"; }
  Device device() const override { return ctx_->device(); }
  void* native_stream() override { return ctx_->stream(); }

  void* allocate(std::size_t bytes) override {
    ctx_->activate();
    return ctx_->allocator().allocate(bytes);
  }

  void deallocate(void* ptr, std::size_t /*bytes*/) noexcept override { ctx_->allocator().deallocate(ptr); }

  void copy(void* dst, Device dst_device, const void* src, Device src_device, std::size_t bytes) override {
    if (bytes == 0) return;
    const Device me = device();
    auto ours = [&](Device d) { return d.is_cpu() || d == me; };
    if (!ours(dst_device) || !ours(src_device))
      throw Error("cuda backend: cannot copy " + std::to_string(bytes) + " bytes from " + device_name(src_device) +
                  " to " + device_name(dst_device) + " (this backend is " + device_name(me) +
                  " and copies between it and host memory)");
    if (!dst || !src) throw Error("cuda backend: copy of " + std::to_string(bytes) + " bytes with a null pointer");
    if (dst_device.is_cpu() && src_device.is_cpu()) {
      if (dst != src) std::memmove(dst, src, bytes);
      return;
    }
    ctx_->activate();
    if (dst_device.is_cpu())
      ctx_->download(dst, src, bytes);  // returns when the host buffer holds the data
    else if (src_device.is_cpu())
      ctx_->upload(dst, src, bytes);  // returns when the host buffer may be reused
    else if (dst != src)
      NEOX_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, ctx_->stream()));
  }

  void synchronize() override {
    ctx_->activate();
    ctx_->synchronize();
  }

  void register_kernels(Kernels& table) override {
#define NEOX_CUDA_OP(name) table.name = bind_op(#name, ctx_.get(), &cuda::name);
    NEOX_KERNEL_OPS(NEOX_CUDA_OP)
#undef NEOX_CUDA_OP
  }

  MemoryStats memory_stats() const override {
    const CachingAllocator::Stats s = ctx_->allocator().stats();
    MemoryStats m;
    m.in_use = s.in_use;
    m.peak_in_use = s.peak_in_use;
    m.reserved = s.reserved;
    return m;
  }

  void reset_peak_memory() override { ctx_->allocator().reset_peak(); }

  // Device time of each run, between two events recorded on the stream.
  std::vector<double> time_runs(const std::function<void()>& fn, int warmup, int runs) override {
    ctx_->activate();
    for (int i = 0; i < warmup; ++i) fn();
    ctx_->synchronize();
    if (runs <= 0) return {};
    EventList list;
    list.events.assign(static_cast<std::size_t>(runs) * 2, nullptr);
    for (cudaEvent_t& e : list.events) NEOX_CUDA_CHECK(cudaEventCreate(&e));
    for (int i = 0; i < runs; ++i) {
      NEOX_CUDA_CHECK(cudaEventRecord(list.events[2 * static_cast<std::size_t>(i)], ctx_->stream()));
      fn();
      ctx_->activate();  // fn may have switched devices
      NEOX_CUDA_CHECK(cudaEventRecord(list.events[2 * static_cast<std::size_t>(i) + 1], ctx_->stream()));
    }
    ctx_->synchronize();
    std::vector<double> ms;
    ms.reserve(static_cast<std::size_t>(runs));
    for (int i = 0; i < runs; ++i) {
      float t = 0.0f;
      NEOX_CUDA_CHECK(cudaEventElapsedTime(&t, list.events[2 * static_cast<std::size_t>(i)],
                                           list.events[2 * static_cast<std::size_t>(i) + 1]));
      ms.push_back(static_cast<double>(t));
    }
    return ms;
  }

 private:
  std::unique_ptr<Context> ctx_;
};

// The default device: the local rank under a launcher (one process per
// GPU; taken modulo the visible devices below), 0 without one. A launch
// environment with bad values throws, naming the variable.
int default_device(std::string& source) {
  const LaunchInfo launch = detect_launch();
  source = launch.launcher == Launcher::none
               ? std::string("the default")
               : "local rank " + std::to_string(launch.local_rank) + " from " + launcher_name(launch.launcher);
  return launch.local_rank;
}

Backend* make_cuda_backend(const Options& options) {
  try {
    std::string source;
    int device = 0;
    if (options.has("device")) {
      device = static_cast<int>(options.get_int("device", 0, 0, 4095));
      source = options.where("device");
    } else {
      device = default_device(source);
    }
    const bool allow_tf32 = options.get_bool("allow_tf32", false);
    const std::int64_t workspace_mb = options.get_int("workspace_mb", 32, 0, 1 << 20);
    const bool attention_tensor_cores = options.get_bool("attention_tensor_cores", true);
    options.reject_unknown();

    int count = 0;
    const cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      throw DeviceUnavailable(std::string("cuda backend: no CUDA device available (cudaGetDeviceCount: ") +
                              cudaGetErrorString(e) + ")");
    }
    if (count == 0) throw DeviceUnavailable("cuda backend: no CUDA device available (cudaGetDeviceCount found none)");
    // From the local rank: wrap around the visible devices, so that a launcher
    // giving each rank one GPU through CUDA_VISIBLE_DEVICES, or several
    // ranks sharing a GPU, works. An explicit device must exist.
    if (!options.has("device")) device %= count;
    if (device >= count) {
      const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
      throw DeviceUnavailable("cuda backend: CUDA device " + std::to_string(device) + " (from " + source +
                              ") is not available: " + std::to_string(count) + " device" + (count == 1 ? "" : "s") +
                              " visible" + (visible ? std::string(" (CUDA_VISIBLE_DEVICES=") + visible + ")" : ""));
    }
    return new CudaBackend(device, allow_tf32, static_cast<std::size_t>(workspace_mb) << 20, attention_tensor_cores);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(std::string("cuda backend: ") + e.what());
  }
}

}  // namespace
}  // namespace neox::cuda

NEOX_PLUGIN(backend, "cuda", "1.0.0", "one NVIDIA GPU (CUDA kernels, cuBLASLt matmul; f32, bf16, f16)",
            &neox::cuda::make_cuda_backend)
