// SPDX-License-Identifier: Apache-2.0
// Elementwise kernels: add, axpby, fill, convert, GeLU, bias add, AdamW.
// Grid-stride loops; every element is read and written by one thread, so the
// aliases the ops allow (out = a, dinp = dout, ...) are safe. add, GeLU and
// bias add move 16-byte packs when the pointers (and, for the bias, the row
// length) allow, scalars otherwise.
#include <type_traits>

#include "common.cuh"

namespace neox::cuda {
namespace {

constexpr float kInvSqrt2 = 0.70710678118654752440f;
constexpr float kInvSqrt2Pi = 0.39894228040143267794f;

// out[i] = op(a[i]) (kIn = 1) or op(a[i], b[i]) (kIn = 2), f32 arithmetic,
// rounded once. Packs of V elements (V = 1: scalar), two packs per thread per
// iteration of the grid-stride loop; the n % V elements after the last pack
// go to the first threads. Each element is read and written by one thread,
// and a thread reads its packs before writing them: out may alias a or b.
template <typename T, int V, int kIn, typename Op>
__global__ void __launch_bounds__(kThreads) map_kernel(T* out, const T* a, const T* b, std::int64_t n, Op op) {
  using P = Pack<T, V>;
  const std::int64_t packs = n / V;
  const std::int64_t stride = grid_threads();
  auto apply = [&](const P& x, const P& y) {
    P o;
#pragma unroll
    for (int e = 0; e < V; ++e) {
      if constexpr (kIn == 1)
        o.v[e] = from_float<T>(op(to_float(x.v[e])));
      else
        o.v[e] = from_float<T>(op(to_float(x.v[e]), to_float(y.v[e])));
    }
    return o;
  };
  std::int64_t i = global_thread();
  for (; i + stride < packs; i += 2 * stride) {
    const std::int64_t j = i + stride;
    const P a0 = load_pack<T, V>(a + i * V), a1 = load_pack<T, V>(a + j * V);
    P b0 = a0, b1 = a1;
    if constexpr (kIn == 2) {
      b0 = load_pack<T, V>(b + i * V);
      b1 = load_pack<T, V>(b + j * V);
    }
    store_pack<T, V>(out + i * V, apply(a0, b0));
    store_pack<T, V>(out + j * V, apply(a1, b1));
  }
  if (i < packs) {
    const P a0 = load_pack<T, V>(a + i * V);
    P b0 = a0;
    if constexpr (kIn == 2) b0 = load_pack<T, V>(b + i * V);
    store_pack<T, V>(out + i * V, apply(a0, b0));
  }
  if constexpr (V > 1) {
    const std::int64_t t = global_thread(), rest = n - packs * V;
    if (t < rest) {
      const std::int64_t k = packs * V + t;
      const float x = to_float(a[k]);
      if constexpr (kIn == 1)
        out[k] = from_float<T>(op(x));
      else
        out[k] = from_float<T>(op(x, to_float(b[k])));
    }
  }
}

struct AddOp {
  __device__ __forceinline__ float operator()(float x, float y) const { return x + y; }
};

template <typename T>
__global__ void axpby_kernel(T* y, const T* x, float alpha, float beta, std::int64_t n) {
  if (beta == 0.0f) {
    for (std::int64_t i = global_thread(); i < n; i += grid_threads()) y[i] = from_float<T>(alpha * to_float(x[i]));
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
  for (std::int64_t i = global_thread(); i < n; i += grid_threads()) out[i] = from_float<Out>(to_float(in[i]));
}

struct GeluOp {
  __device__ __forceinline__ float operator()(float x) const { return 0.5f * x * (1.0f + erff(x * kInvSqrt2)); }
};

// gelu'(x) * g
struct GeluBackwardOp {
  __device__ __forceinline__ float operator()(float x, float g) const {
    const float cdf = 0.5f * (1.0f + erff(x * kInvSqrt2));
    const float pdf = kInvSqrt2Pi * expf(-0.5f * x * x);
    return (cdf + x * pdf) * g;
  }
};

// out[N,C] += bias[C]. Block (32, 8): threadIdx.x walks the packs of a tile
// of 32 packs of columns (blockIdx.x), threadIdx.y the rows, strided over
// blockIdx.y; each thread keeps its bias pack in registers (no division).
constexpr int kBiasTilePacks = 32, kBiasRowLanes = 8;

template <typename T, int V>
__global__ void __launch_bounds__(kBiasTilePacks* kBiasRowLanes)
    add_bias_kernel(T* out, const T* bias, std::int64_t N, std::int64_t C) {
  using P = Pack<T, V>;
  const std::int64_t p = static_cast<std::int64_t>(blockIdx.x) * kBiasTilePacks + threadIdx.x;
  if (p >= C / V) return;
  const P bp = load_pack<T, V>(bias + p * V);
  float bv[V];
#pragma unroll
  for (int e = 0; e < V; ++e) bv[e] = to_float(bp.v[e]);
  auto apply = [&](P x) {
#pragma unroll
    for (int e = 0; e < V; ++e) x.v[e] = from_float<T>(to_float(x.v[e]) + bv[e]);
    return x;
  };
  T* col = out + p * V;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.y) * blockDim.y;
  std::int64_t r = static_cast<std::int64_t>(blockIdx.y) * blockDim.y + threadIdx.y;
  for (; r + stride < N; r += 2 * stride) {
    T* o0 = col + r * C;
    T* o1 = col + (r + stride) * C;
    const P x0 = load_pack<T, V>(o0), x1 = load_pack<T, V>(o1);
    store_pack<T, V>(o0, apply(x0));
    store_pack<T, V>(o1, apply(x1));
  }
  if (r < N) {
    T* o0 = col + r * C;
    store_pack<T, V>(o0, apply(load_pack<T, V>(o0)));
  }
}

// Per element in double, in torch.optim.AdamW's order (as the cpu backend).
__global__ void adamw_kernel(float* param, const float* grad, float* m, float* v, AdamWConstants k, std::int64_t n) {
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

// Launches map_kernel: 16-byte packs when every pointer is 16-byte aligned,
// else scalar.
template <int kIn, typename Op>
void launch_map(const Launch& l, DType dt, const char* what, void* out, const void* a, const void* b, std::int64_t n,
                Op op) {
  dispatch_float(dt, what, [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr int V = kPackOf<T>;
    T* o = static_cast<T*>(out);
    const T* x = static_cast<const T*>(a);
    const T* y = static_cast<const T*>(b);
    if (aligned16(out) && aligned16(a) && (kIn == 1 || aligned16(b))) {
      const std::int64_t packs = n / V;
      map_kernel<T, V, kIn, Op><<<grid_for((packs + 1) / 2, l.max_blocks), kThreads, 0, l.stream>>>(o, x, y, n, op);
    } else {
      map_kernel<T, 1, kIn, Op><<<grid_for((n + 1) / 2, l.max_blocks), kThreads, 0, l.stream>>>(o, x, y, n, op);
    }
  });
  NEOX_CUDA_CHECK_LAUNCH();
}

void launch_add(const Launch& l, DType dt, void* out, const void* a, const void* b, std::int64_t n) {
  if (n <= 0) return;
  launch_map<2>(l, dt, "add", out, a, b, n, AddOp{});
}

void launch_axpby(const Launch& l, DType dt, void* y, const void* x, float alpha, float beta, std::int64_t n) {
  if (n <= 0) return;
  dispatch_float(dt, "axpby", [&](auto tag) {
    using T = typename decltype(tag)::type;
    axpby_kernel<T><<<grid_for(n, l.max_blocks), kThreads, 0, l.stream>>>(static_cast<T*>(y), static_cast<const T*>(x),
                                                                          alpha, beta, n);
  });
  NEOX_CUDA_CHECK_LAUNCH();
}

void launch_fill_bits(const Launch& l, void* t, std::uint64_t bits, int elem_bytes, std::int64_t n) {
  if (n <= 0) return;
  const unsigned grid = grid_for(n, l.max_blocks);
  switch (elem_bytes) {
    case 2:
      fill_kernel<unsigned short>
          <<<grid, kThreads, 0, l.stream>>>(static_cast<unsigned short*>(t), static_cast<unsigned short>(bits), n);
      break;
    case 4:
      fill_kernel<unsigned><<<grid, kThreads, 0, l.stream>>>(static_cast<unsigned*>(t), static_cast<unsigned>(bits), n);
      break;
    case 8:
      fill_kernel<unsigned long long><<<grid, kThreads, 0, l.stream>>>(static_cast<unsigned long long*>(t),
                                                                       static_cast<unsigned long long>(bits), n);
      break;
    default:
      throw Error("cuda backend: fill: unsupported element size " + std::to_string(elem_bytes));
  }
  NEOX_CUDA_CHECK_LAUNCH();
}

void launch_convert(const Launch& l, DType out_dt, void* out, DType in_dt, const void* in, std::int64_t n) {
  if (n <= 0) return;
  const unsigned grid = grid_for(n, l.max_blocks);
  dispatch_float(in_dt, "convert", [&](auto in_tag) {
    using In = typename decltype(in_tag)::type;
    dispatch_float(out_dt, "convert", [&](auto out_tag) {
      using Out = typename decltype(out_tag)::type;
      convert_kernel<In, Out><<<grid, kThreads, 0, l.stream>>>(static_cast<Out*>(out), static_cast<const In*>(in), n);
    });
  });
  NEOX_CUDA_CHECK_LAUNCH();
}

void launch_gelu_forward(const Launch& l, DType dt, void* out, const void* inp, std::int64_t n) {
  if (n <= 0) return;
  launch_map<1>(l, dt, "gelu_forward", out, inp, nullptr, n, GeluOp{});
}

void launch_gelu_backward(const Launch& l, DType dt, void* dinp, const void* inp, const void* dout, std::int64_t n) {
  if (n <= 0) return;
  launch_map<2>(l, dt, "gelu_backward", dinp, inp, dout, n, GeluBackwardOp{});
}

void launch_add_bias(const Launch& l, DType dt, void* out, const void* bias, std::int64_t N, std::int64_t C) {
  if (N <= 0 || C <= 0) return;
  dispatch_float(dt, "add_bias", [&](auto tag) {
    using T = typename decltype(tag)::type;
    auto go = [&](auto v) {
      constexpr int V = decltype(v)::value;
      const std::int64_t tiles = (C / V + kBiasTilePacks - 1) / kBiasTilePacks;
      // about max_blocks blocks in all, each thread two or more rows
      const std::int64_t row_groups = (N + 2 * kBiasRowLanes - 1) / (2 * kBiasRowLanes);
      const std::int64_t gy = std::max<std::int64_t>(
          1, std::min<std::int64_t>({row_groups, std::max<std::int64_t>(1, l.max_blocks / tiles), 65535}));
      const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(gy));
      const dim3 block(kBiasTilePacks, kBiasRowLanes);
      add_bias_kernel<T, V><<<grid, block, 0, l.stream>>>(static_cast<T*>(out), static_cast<const T*>(bias), N, C);
    };
    if (aligned16(out) && aligned16(bias) && C % kPackOf<T> == 0)
      go(std::integral_constant<int, kPackOf<T>>{});
    else
      go(std::integral_constant<int, 1>{});
  });
  NEOX_CUDA_CHECK_LAUNCH();
}

void launch_adamw(const Launch& l, float* param, const float* grad, float* m, float* v, const AdamWConstants& k,
                  std::int64_t n) {
  if (n <= 0) return;
  adamw_kernel<<<grid_for(n, l.max_blocks), kThreads, 0, l.stream>>>(param, grad, m, v, k, n);
  NEOX_CUDA_CHECK_LAUNCH();
}

}  // namespace neox::cuda
