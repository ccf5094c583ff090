// SPDX-License-Identifier: Apache-2.0
// Elementwise kernels: add, axpby, fill, convert, GeLU, bias add, AdamW.
// Grid-stride loops; every element is read and written by one thread, so the
// aliases the ops allow (out = a, dinp = dout, ...) are safe.
#include "common.cuh"

namespace neox::cuda {
namespace {

constexpr float kInvSqrt2 = 0.70710678118654752440f;
constexpr float kInvSqrt2Pi = 0.39894228040143267794f;

template <typename T>
__global__ void add_kernel(T* out, const T* a, const T* b, std::int64_t n) {
  for (std::int64_t i = global_thread(); i < n; i += grid_threads())
    out[i] = from_float<T>(to_float(a[i]) + to_float(b[i]));
}

template <typename T>
__global__ void axpby_kernel(T* y, const T* x, float alpha, float beta, std::int64_t n) {
  if (beta == 0.0f) {
    for (std::int64_t i = global_thread(); i < n; i += grid_threads())
      y[i] = from_float<T>(alpha * to_float(x[i]));
  } else {
    for (std::int64_t i = global_thread(); i < n; i += grid_threads())
      y[i] = from_float<T>(alpha * to_float(x[i]) + beta * to_float(y[i]));
  }
}

template <typename U>
__global__ void fill_kernel(U* t, U value, std::int64_t n) {
  for (std::int64_t i = global_thread(); i < n; i += grid_threads()) t[i] = value;
}

template <typename In, typename Out>
__global__ void convert_kernel(Out* out, const In* in, std::int64_t n) {
  for (std::int64_t i = global_thread(); i < n; i += grid_threads())
    out[i] = from_float<Out>(to_float(in[i]));
}

template <typename T>
__global__ void gelu_forward_kernel(T* out, const T* inp, std::int64_t n) {
  for (std::int64_t i = global_thread(); i < n; i += grid_threads()) {
    const float x = to_float(inp[i]);
    out[i] = from_float<T>(0.5f * x * (1.0f + erff(x * kInvSqrt2)));
  }
}

template <typename T>
__global__ void gelu_backward_kernel(T* dinp, const T* inp, const T* dout, std::int64_t n) {
  for (std::int64_t i = global_thread(); i < n; i += grid_threads()) {
    const float x = to_float(inp[i]);
    const float cdf = 0.5f * (1.0f + erff(x * kInvSqrt2));
    const float pdf = kInvSqrt2Pi * expf(-0.5f * x * x);
    dinp[i] = from_float<T>((cdf + x * pdf) * to_float(dout[i]));
  }
}

template <typename T>
__global__ void add_bias_kernel(T* out, const T* bias, std::int64_t N, std::int64_t C) {
  const std::int64_t n = N * C;
  for (std::int64_t i = global_thread(); i < n; i += grid_threads())
    out[i] = from_float<T>(to_float(out[i]) + to_float(bias[i % C]));
}

// Per element in double, in torch.optim.AdamW's order (as the cpu backend).
__global__ void adamw_kernel(float* param, const float* grad, float* m, float* v, AdamWConstants k,
                             std::int64_t n) {
  for (std::int64_t i = global_thread(); i < n; i += grid_threads()) {
    const double g = static_cast<double>(grad[i]) * k.grad_scale;
    const double w = static_cast<double>(param[i]) * k.lr_decay;
    const double mi = k.beta1 * static_cast<double>(m[i]) + (1.0 - k.beta1) * g;
    const double vi = k.beta2 * static_cast<double>(v[i]) + (1.0 - k.beta2) * g * g;
    m[i] = static_cast<float>(mi);
    v[i] = static_cast<float>(vi);
    param[i] = static_cast<float>(w - k.step_size * mi / (sqrt(vi) / k.bc2_sqrt + k.eps));
  }
}

}  // namespace

void launch_add(const Launch& l, DType dt, void* out, const void* a, const void* b, std::int64_t n) {
  if (n <= 0) return;
  dispatch_float(dt, "add", [&](auto tag) {
    using T = typename decltype(tag)::type;
    add_kernel<T><<<grid_for(n, l.max_blocks), kThreads, 0, l.stream>>>(
        static_cast<T*>(out), static_cast<const T*>(a), static_cast<const T*>(b), n);
  });
  NEOX_CUDA_CHECK_LAUNCH();
}

void launch_axpby(const Launch& l, DType dt, void* y, const void* x, float alpha, float beta,
                  std::int64_t n) {
  if (n <= 0) return;
  dispatch_float(dt, "axpby", [&](auto tag) {
    using T = typename decltype(tag)::type;
    axpby_kernel<T><<<grid_for(n, l.max_blocks), kThreads, 0, l.stream>>>(
        static_cast<T*>(y), static_cast<const T*>(x), alpha, beta, n);
  });
  NEOX_CUDA_CHECK_LAUNCH();
}

void launch_fill_bits(const Launch& l, void* t, std::uint64_t bits, int elem_bytes, std::int64_t n) {
  if (n <= 0) return;
  const unsigned grid = grid_for(n, l.max_blocks);
  switch (elem_bytes) {
    case 2:
      fill_kernel<unsigned short><<<grid, kThreads, 0, l.stream>>>(
          static_cast<unsigned short*>(t), static_cast<unsigned short>(bits), n);
      break;
    case 4:
      fill_kernel<unsigned><<<grid, kThreads, 0, l.stream>>>(static_cast<unsigned*>(t),
                                                            static_cast<unsigned>(bits), n);
      break;
    case 8:
      fill_kernel<unsigned long long><<<grid, kThreads, 0, l.stream>>>(
          static_cast<unsigned long long*>(t), static_cast<unsigned long long>(bits), n);
      break;
    default:
      throw Error("cuda backend: fill: unsupported element size " + std::to_string(elem_bytes));
  }
  NEOX_CUDA_CHECK_LAUNCH();
}

void launch_convert(const Launch& l, DType out_dt, void* out, DType in_dt, const void* in,
                    std::int64_t n) {
  if (n <= 0) return;
  const unsigned grid = grid_for(n, l.max_blocks);
  dispatch_float(in_dt, "convert", [&](auto in_tag) {
    using In = typename decltype(in_tag)::type;
    dispatch_float(out_dt, "convert", [&](auto out_tag) {
      using Out = typename decltype(out_tag)::type;
      convert_kernel<In, Out><<<grid, kThreads, 0, l.stream>>>(static_cast<Out*>(out),
                                                               static_cast<const In*>(in), n);
    });
  });
  NEOX_CUDA_CHECK_LAUNCH();
}

void launch_gelu_forward(const Launch& l, DType dt, void* out, const void* inp, std::int64_t n) {
  if (n <= 0) return;
  dispatch_float(dt, "gelu_forward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    gelu_forward_kernel<T><<<grid_for(n, l.max_blocks), kThreads, 0, l.stream>>>(
        static_cast<T*>(out), static_cast<const T*>(inp), n);
  });
  NEOX_CUDA_CHECK_LAUNCH();
}

void launch_gelu_backward(const Launch& l, DType dt, void* dinp, const void* inp, const void* dout,
                          std::int64_t n) {
  if (n <= 0) return;
  dispatch_float(dt, "gelu_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    gelu_backward_kernel<T><<<grid_for(n, l.max_blocks), kThreads, 0, l.stream>>>(
        static_cast<T*>(dinp), static_cast<const T*>(inp), static_cast<const T*>(dout), n);
  });
  NEOX_CUDA_CHECK_LAUNCH();
}

void launch_add_bias(const Launch& l, DType dt, void* out, const void* bias, std::int64_t N,
                     std::int64_t C) {
  if (N <= 0 || C <= 0) return;
  dispatch_float(dt, "add_bias", [&](auto tag) {
    using T = typename decltype(tag)::type;
    add_bias_kernel<T><<<grid_for(N * C, l.max_blocks), kThreads, 0, l.stream>>>(
        static_cast<T*>(out), static_cast<const T*>(bias), N, C);
  });
  NEOX_CUDA_CHECK_LAUNCH();
}

void launch_adamw(const Launch& l, float* param, const float* grad, float* m, float* v,
                  const AdamWConstants& k, std::int64_t n) {
  if (n <= 0) return;
  adamw_kernel<<<grid_for(n, l.max_blocks), kThreads, 0, l.stream>>>(param, grad, m, v, k, n);
  NEOX_CUDA_CHECK_LAUNCH();
}

}  // namespace neox::cuda
