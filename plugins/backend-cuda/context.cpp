// SPDX-License-Identifier: Apache-2.0
#include "context.h"

#include <algorithm>
#include <string>

#include "cuda_check.h"
#include "launch.h"
#include "neox/error.h"

namespace neox::cuda {
namespace {

// Errors that mean "this device cannot be used here" rather than a bug.
bool device_unusable(cudaError_t e) {
  switch (e) {
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorStubLibrary:
    case cudaErrorDevicesUnavailable:
    case cudaErrorInvalidDevice:
    case cudaErrorSystemDriverMismatch:
    case cudaErrorCompatNotSupportedOnDevice:
    case cudaErrorSystemNotReady:
      return true;
    default:
      return false;
  }
}

}  // namespace

MatmulPlan::~MatmulPlan() {
  if (c) (void)cublasLtMatrixLayoutDestroy(c);
  if (b) (void)cublasLtMatrixLayoutDestroy(b);
  if (a) (void)cublasLtMatrixLayoutDestroy(a);
  if (desc) (void)cublasLtMatmulDescDestroy(desc);
}

Context::Context(int device, bool allow_tf32, std::size_t workspace_bytes) : device_(device), allow_tf32_(allow_tf32) {
  try {
    cudaError_t e = cudaSetDevice(device);
    if (e == cudaSuccess) e = cudaFree(nullptr);  // creates the device's context now, so failures show here
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      std::string msg = "cuda backend: cannot use CUDA device " + std::to_string(device) + " (" + cudaGetErrorName(e) +
                        ": " + cudaGetErrorString(e) + ")";
      if (device_unusable(e)) throw DeviceUnavailable(msg);
      throw Error(msg);
    }
    int sms = 0;
    NEOX_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    max_blocks_ = std::max(1, sms) * 32;
    NEOX_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    alloc_ = std::make_unique<CachingAllocator>(device, stream_);
    NEOX_CUBLAS_CHECK(cublasLtCreate(&lt_));
    if (workspace_bytes > 0) workspace_ = DeviceBuffer(alloc_.get(), workspace_bytes);
    bad_index_ = DeviceBuffer(alloc_.get(), sizeof(unsigned long long));
  } catch (...) {
    release();
    throw;
  }
}

Context::~Context() { release(); }

void Context::release() noexcept {
  // A backend destroyed during static destruction at process exit may find
  // the CUDA runtime already shut down (cudaErrorCudartUnloading): then
  // nothing is handed back (the process is ending), and nothing is called.
  const bool runtime_usable = cudaSetDevice(device_) == cudaSuccess;
  if (!runtime_usable) (void)cudaGetLastError();
  if (runtime_usable && stream_) (void)cudaStreamSynchronize(stream_);
  matmul_plans.clear();  // cuBLASLt descriptors: host memory only
  rotary_tables.clear();
  workspace_.reset();
  bad_index_.reset();
  if (lt_) {
    if (runtime_usable) (void)cublasLtDestroy(lt_);
    lt_ = nullptr;
  }
  if (alloc_ && !runtime_usable) alloc_->abandon();
  alloc_.reset();
  if (stream_) {
    if (runtime_usable) (void)cudaStreamDestroy(stream_);
    stream_ = nullptr;
  }
}

void Context::activate() const { NEOX_CUDA_CHECK(cudaSetDevice(device_)); }

void Context::upload(void* dst, const void* src, std::size_t bytes) {
  if (bytes == 0) return;
  NEOX_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
  NEOX_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void Context::download(void* dst, const void* src, std::size_t bytes) {
  if (bytes == 0) return;
  NEOX_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
  NEOX_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void Context::synchronize() { NEOX_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

std::int64_t Context::first_bad_index(const std::int32_t* ids, std::int64_t n, std::int64_t hi, bool allow_negative) {
  if (n <= 0) return -1;
  auto* slot = bad_index_.as<unsigned long long>();
  NEOX_CUDA_CHECK(cudaMemsetAsync(slot, 0xff, sizeof(unsigned long long), stream_));
  launch_find_bad_ids(Launch{stream_, max_blocks_}, slot, ids, n, hi, allow_negative);
  unsigned long long first = 0;
  download(&first, slot, sizeof first);
  return first == ~0ull ? -1 : static_cast<std::int64_t>(first);
}

}  // namespace neox::cuda
