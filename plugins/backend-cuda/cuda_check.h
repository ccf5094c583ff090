// SPDX-License-Identifier: Apache-2.0
// Checked CUDA and cuBLASLt calls. Every runtime or library call of the cuda
// plugin goes through one of these macros; a failure throws neox::Error
//   "cuda backend: <call text> failed: <error name>: <error string> (<file>:<line>)"
// Kernel launches are followed by NEOX_CUDA_CHECK_LAUNCH().
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

namespace neox::cuda {

[[noreturn]] void throw_cuda_error(const char* call, cudaError_t error, const char* file, int line);
[[noreturn]] void throw_cublas_error(const char* call, cublasStatus_t status, const char* file, int line);

}  // namespace neox::cuda

#define NEOX_CUDA_CHECK(call)                                                                                     \
  do {                                                                                                            \
    const cudaError_t neox_cuda_err_ = (call);                                                                    \
    if (neox_cuda_err_ != cudaSuccess) ::neox::cuda::throw_cuda_error(#call, neox_cuda_err_, __FILE__, __LINE__); \
  } while (0)

#define NEOX_CUBLAS_CHECK(call)                                                     \
  do {                                                                              \
    const cublasStatus_t neox_cublas_st_ = (call);                                  \
    if (neox_cublas_st_ != CUBLAS_STATUS_SUCCESS)                                   \
      ::neox::cuda::throw_cublas_error(#call, neox_cublas_st_, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: reports launch errors (bad configuration, no kernel
// image for this GPU) and earlier asynchronous errors.
#define NEOX_CUDA_CHECK_LAUNCH() NEOX_CUDA_CHECK(cudaGetLastError())
