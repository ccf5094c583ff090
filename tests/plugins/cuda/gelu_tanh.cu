// SPDX-License-Identifier: Apache-2.0
// Test plugin: a CUDA kernels provider that overrides gelu_forward only,
// with the tanh approximation
//   gelu(x) ~ 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
// (unlike the cuda backend's exact erf GeLU, so a test sees which ran), in
// f32, bf16 and f16. It launches on the backend's stream (native_stream),
// in order with the backend's own kernels. The GPU counterpart of
// gelu_tanh.cpp, and the shape of a third-party CUDA kernel plugin.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <string>

#include "neox/backend.h"
#include "neox/error.h"
#include "neox/kernel_contract.h"
#include "neox/options.h"
#include "neox/plugin.h"

namespace {

__device__ float load(const float* p, long i) { return p[i]; }
__device__ float load(const __nv_bfloat16* p, long i) { return __bfloat162float(p[i]); }
__device__ float load(const __half* p, long i) { return __half2float(p[i]); }
__device__ void store(float* p, long i, float v) { p[i] = v; }
__device__ void store(__nv_bfloat16* p, long i, float v) { p[i] = __float2bfloat16_rn(v); }
__device__ void store(__half* p, long i, float v) { p[i] = __float2half_rn(v); }

template <typename T>
__global__ void gelu_tanh_kernel(T* out, const T* inp, long n) {
  const float k = 0.7978845608028654f;  // sqrt(2/pi)
  for (long i = blockIdx.x * static_cast<long>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<long>(gridDim.x) * blockDim.x) {
    const float x = load(inp, i);
    store(out, i, 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x))));
  }
}

template <typename T>
void launch(neox::Tensor& out, const neox::Tensor& inp, cudaStream_t stream) {
  const long n = static_cast<long>(inp.numel());
  const int threads = 256;
  const long blocks = (n + threads - 1) / threads;
  gelu_tanh_kernel<T><<<static_cast<unsigned>(blocks < 65536 ? blocks : 65536), threads, 0, stream>>>(
      static_cast<T*>(out.data()), static_cast<const T*>(inp.data()), n);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    throw neox::Error(std::string("gelu_forward (test-cuda-gelu-tanh): launch failed: ") + cudaGetErrorString(e));
}

class CudaGeluTanh final : public neox::KernelProvider {
 public:
  neox::DeviceType device() const override { return neox::DeviceType::cuda; }
  void attach(neox::Backend& backend) override {
    stream_ = static_cast<cudaStream_t>(backend.native_stream());
    device_ = backend.device();
  }
  void register_kernels(neox::Kernels& table) override {
    cudaStream_t stream = stream_;
    const neox::Device device = device_;
    table.gelu_forward = [stream, device](neox::Tensor& out, const neox::Tensor& inp) {
      // The SDK's checks of the op (neox/kernel_contract.h): on the backend's
      // device, one dtype of f32, bf16 and f16, as many elements.
      const neox::ElementsShape s = neox::kernel_check::gelu_forward(device, out, inp);
      if (s.n == 0) return;
      switch (s.dtype) {
        case neox::DType::bf16:
          return launch<__nv_bfloat16>(out, inp, stream);
        case neox::DType::f16:
          return launch<__half>(out, inp, stream);
        default:
          return launch<float>(out, inp, stream);
      }
    };
  }

 private:
  cudaStream_t stream_ = nullptr;
  neox::Device device_;
};

neox::KernelProvider* make(const neox::Options& options) {
  options.reject_unknown();
  return new CudaGeluTanh();
}

}  // namespace

NEOX_PLUGIN(kernels, "test-cuda-gelu-tanh", "0.0", "test: tanh-approximation gelu_forward on the GPU", &make)
