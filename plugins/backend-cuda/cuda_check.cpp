// SPDX-License-Identifier: Apache-2.0
#include "cuda_check.h"

#include <cstring>
#include <string>

#include "neox/error.h"

namespace neox::cuda {
namespace {

// "plugins/backend-cuda/x.cpp" from an absolute __FILE__ (the basename otherwise).
std::string short_file(const char* file) {
  std::string f = file ? file : "?";
  const std::size_t p = f.rfind("plugins/backend-cuda/");
  if (p != std::string::npos) return f.substr(p);
  const std::size_t slash = f.rfind('/');
  return slash == std::string::npos ? f : f.substr(slash + 1);
}

}  // namespace

void throw_cuda_error(const char* call, cudaError_t error, const char* file, int line) {
  std::string msg = "cuda backend: ";
  msg += call;
  msg += " failed: ";
  msg += cudaGetErrorName(error);
  msg += ": ";
  msg += cudaGetErrorString(error);
  msg += " (";
  msg += short_file(file);
  msg += ":";
  msg += std::to_string(line);
  msg += ")";
  throw Error(msg);
}

void throw_cublas_error(const char* call, cublasStatus_t status, const char* file, int line) {
  std::string msg = "cuda backend: ";
  msg += call;
  msg += " failed: ";
  msg += cublasLtGetStatusName(status);
  msg += ": ";
  msg += cublasLtGetStatusString(status);
  msg += " (";
  msg += short_file(file);
  msg += ":";
  msg += std::to_string(line);
  msg += ")";
  throw Error(msg);
}

}  // namespace neox::cuda
