// SPDX-License-Identifier: Apache-2.0
// Context: the state every cuda op needs — the device, the backend's stream,
// its allocator, the cuBLASLt handle and workspace, and the caches (matmul
// plans, rotary tables). Owned by the backend; ops receive it by reference.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "allocator.h"
#include "neox/dtype.h"

namespace neox::cuda {

// One cached cuBLASLt configuration (descriptors and the heuristic's
// algorithm) for a matmul shape; see matmul.cpp.
struct MatmulPlan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr;  // cuBLASLt's A: our b
  cublasLtMatrixLayout_t b = nullptr;  // cuBLASLt's B: our a
  cublasLtMatrixLayout_t c = nullptr;  // C and D
  cublasLtMatmulAlgo_t algo{};
  bool fallback = false;  // no cuBLASLt algorithm: the plain tiled kernel
  MatmulPlan() = default;
  MatmulPlan(const MatmulPlan&) = delete;
  MatmulPlan& operator=(const MatmulPlan&) = delete;
  ~MatmulPlan();
};

// cos/sin of the angles of positions [start, start + count) for one
// (rotary_dims, base), as doubles [count, rotary_dims / 2, 2]; see rotary.cpp.
struct RotaryTable {
  int rotary_dims = 0;
  float base = 0.0f;
  std::int64_t start = 0;
  std::int64_t count = 0;
  DeviceBuffer table;
};

class Context {
 public:
  // Sets up the device, stream, allocator and cuBLASLt; throws neox::Error
  // (neox::DeviceUnavailable when the device cannot be used at all).
  Context(int device, bool allow_tf32, std::size_t workspace_bytes);
  ~Context();  // synchronises, frees everything; never throws
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  int device_index() const { return device_; }
  Device device() const { return Device{DeviceType::cuda, device_}; }
  cudaStream_t stream() const { return stream_; }
  bool allow_tf32() const { return allow_tf32_; }
  // bf16/f16 attention on the tensor cores where it can (option
  // attention_tensor_cores, default true; false: the CUDA-core kernels).
  bool attention_tensor_cores() const { return attention_tensor_cores_; }
  void set_attention_tensor_cores(bool on) { attention_tensor_cores_ = on; }
  CachingAllocator& allocator() { return *alloc_; }
  const CachingAllocator& allocator() const { return *alloc_; }
  cublasLtHandle_t cublaslt() const { return lt_; }
  void* workspace() const { return workspace_.get(); }
  std::size_t workspace_bytes() const { return workspace_.bytes(); }
  // Blocks for grid-stride kernels: enough to fill the GPU a few times over.
  int max_blocks() const { return max_blocks_; }

  // Makes this context's device current for the calling thread.
  void activate() const;
  // Scratch memory, returned to the cache when the buffer goes (stream-ordered, so
  // a kernel queued before that still sees valid memory).
  DeviceBuffer temp(std::size_t bytes) { return DeviceBuffer(alloc_.get(), bytes); }
  // Host -> device / device -> host on the stream, waiting for completion.
  void upload(void* dst, const void* src, std::size_t bytes);
  void download(void* dst, const void* src, std::size_t bytes);
  void synchronize();

  // Index of the first of ids[0, n) that is >= hi, or < 0 unless
  // allow_negative; -1 when there is none. Synchronises.
  std::int64_t first_bad_index(const std::int32_t* ids, std::int64_t n, std::int64_t hi, bool allow_negative);

  // Caches (see matmul.cpp, rotary.cpp). Buffers in them come from the
  // allocator and are released before it.
  using MatmulKey = std::array<std::int64_t, 14>;
  std::map<MatmulKey, std::unique_ptr<MatmulPlan>> matmul_plans;
  std::vector<RotaryTable> rotary_tables;

 private:
  void release() noexcept;
  int device_ = 0;
  bool allow_tf32_ = false;
  bool attention_tensor_cores_ = true;
  int max_blocks_ = 1;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<CachingAllocator> alloc_;
  cublasLtHandle_t lt_ = nullptr;
  DeviceBuffer workspace_;
  DeviceBuffer bad_index_;  // one unsigned long long for first_bad_index
};

}  // namespace neox::cuda
