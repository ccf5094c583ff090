// SPDX-License-Identifier: Apache-2.0
// Launches of the cuda ops other than matmul, rotary and attention, after
// the SDK's checks of each op (neox/kernel_contract.h), which also hold the
// dtype roles of kernels.h ("Precision"): activations and the parameters a
// forward reads share the call's compute dtype (f32, bf16 or f16); parameter
// gradients, statistics and optimizer state are f32.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "cuda_check.h"
#include "launch.h"
#include "neox/kernel_contract.h"
#include "ops.h"

namespace neox::cuda {
namespace {

Launch launch_of(const Context& ctx) { return Launch{ctx.stream(), ctx.max_blocks()}; }

// Accumulates into db[C] (and dw[C] when not null) the column sums of dout[N,C]
// (and of dout * xhat, xhat = (inp - mean) * rstd), through per-chunk partials.
void column_gradients(Context& ctx, DType dt, float* db, float* dw, const void* dout, const void* inp,
                      const float* mean, const float* rstd, std::int64_t N, std::int64_t C) {
  if (N <= 0 || C <= 0) return;
  constexpr std::int64_t kMaxChunks = 256, kMinRowsPerChunk = 64;
  const std::int64_t chunks = std::min(kMaxChunks, (N + kMinRowsPerChunk - 1) / kMinRowsPerChunk);
  const std::int64_t rows_per_chunk = (N + chunks - 1) / chunks;
  const std::size_t bytes = static_cast<std::size_t>(chunks * C) * sizeof(float);
  DeviceBuffer pdb = ctx.temp(bytes);
  DeviceBuffer pdw;
  if (dw) pdw = ctx.temp(bytes);
  const Launch l = launch_of(ctx);
  launch_column_partials(l, dt, pdb.as<float>(), dw ? pdw.as<float>() : nullptr, dout, inp, mean, rstd, N, C, chunks,
                         rows_per_chunk);
  launch_column_finalize(l, db, pdb.as<float>(), chunks, C);
  if (dw) launch_column_finalize(l, dw, pdw.as<float>(), chunks, C);
}

// Targets must be < V (negative means ignored); synchronises to find out.
void check_targets(Context& ctx, const char* op, const Tensor& targets, std::int64_t V) {
  const auto* t = targets.ptr<std::int32_t>();
  const std::int64_t bad = ctx.first_bad_index(t, targets.numel(), V, /*allow_negative=*/true);
  if (bad < 0) return;
  std::int32_t value = 0;
  ctx.download(&value, t + bad, sizeof value);
  KernelChecker(op, ctx.device()).target_out_of_range(bad, value, V);
}

// Every id must name a row of the table; synchronises to find out.
void check_ids(Context& ctx, const char* op, const Tensor& ids, std::int64_t V) {
  const auto* p = ids.ptr<std::int32_t>();
  const std::int64_t n = ctx.first_bad_index(p, ids.numel(), V, /*allow_negative=*/false);
  if (n < 0) return;
  std::int32_t value = 0;
  ctx.download(&value, p + n, sizeof value);
  KernelChecker(op, ctx.device()).id_out_of_range(ids, n, value, V);
}

template <typename T>
std::uint64_t bits_of(T v) {
  static_assert(sizeof(T) <= sizeof(std::uint64_t));
  std::uint64_t out = 0;
  std::memcpy(&out, &v, sizeof v);
  return out;
}

}  // namespace

void add_bias(Context& ctx, Tensor& out, const Tensor& bias) {
  const RowsShape s = kernel_check::add_bias(ctx.device(), out, bias);
  launch_add_bias(launch_of(ctx), s.dtype, out.data(), bias.data(), s.rows, s.cols);
}

void bias_backward(Context& ctx, Tensor& dbias, const Tensor& dout) {
  const RowsShape s = kernel_check::bias_backward(ctx.device(), dbias, dout);
  column_gradients(ctx, s.dtype, dbias.ptr<float>(), nullptr, dout.data(), nullptr, nullptr, nullptr, s.rows, s.cols);
}

void layernorm_forward(Context& ctx, Tensor& out, Tensor& mean, Tensor& rstd, const Tensor& inp, const Tensor& weight,
                       const Tensor& bias, float eps) {
  const RowsShape s = kernel_check::layernorm_forward(ctx.device(), out, mean, rstd, inp, weight, bias, eps);
  launch_layernorm_forward(launch_of(ctx), s.dtype, out.data(), mean.ptr<float>(), rstd.ptr<float>(), inp.data(),
                           weight.data(), bias.data(), s.rows, s.cols, eps);
}

void layernorm_backward(Context& ctx, Tensor& dinp, Tensor& dweight, Tensor& dbias, const Tensor& dout,
                        const Tensor& inp, const Tensor& weight, const Tensor& mean, const Tensor& rstd) {
  const RowsShape s =
      kernel_check::layernorm_backward(ctx.device(), dinp, dweight, dbias, dout, inp, weight, mean, rstd);
  // Parameter gradients first: they read inp, which the input gradient does not change
  // unless the caller aliased them (the cpu backend reads inp after dinp; both are fine
  // for disjoint tensors).
  column_gradients(ctx, s.dtype, dbias.ptr<float>(), dweight.ptr<float>(), dout.data(), inp.data(), mean.ptr<float>(),
                   rstd.ptr<float>(), s.rows, s.cols);
  launch_layernorm_backward_input(launch_of(ctx), s.dtype, dinp.data(), dout.data(), inp.data(), weight.data(),
                                  mean.ptr<float>(), rstd.ptr<float>(), s.rows, s.cols);
}

void gelu_forward(Context& ctx, Tensor& out, const Tensor& inp) {
  const ElementsShape s = kernel_check::gelu_forward(ctx.device(), out, inp);
  launch_gelu_forward(launch_of(ctx), s.dtype, out.data(), inp.data(), s.n);
}

void gelu_backward(Context& ctx, Tensor& dinp, const Tensor& inp, const Tensor& dout) {
  const ElementsShape s = kernel_check::gelu_backward(ctx.device(), dinp, inp, dout);
  launch_gelu_backward(launch_of(ctx), s.dtype, dinp.data(), inp.data(), dout.data(), s.n);
}

void cross_entropy_forward(Context& ctx, Tensor& losses, Tensor& lse, const Tensor& logits, const Tensor& targets) {
  const RowsShape s = kernel_check::cross_entropy_forward(ctx.device(), losses, lse, logits, targets);
  if (s.rows == 0) return;
  check_targets(ctx, "cross_entropy_forward", targets, s.cols);
  launch_cross_entropy_forward(launch_of(ctx), s.dtype, losses.ptr<float>(), lse.ptr<float>(), logits.data(),
                               targets.ptr<std::int32_t>(), s.rows, s.cols);
}

void cross_entropy_backward(Context& ctx, Tensor& dlogits, const Tensor& logits, const Tensor& lse,
                            const Tensor& targets, float dloss) {
  const RowsShape s = kernel_check::cross_entropy_backward(ctx.device(), dlogits, logits, lse, targets, dloss);
  if (s.rows == 0) return;
  check_targets(ctx, "cross_entropy_backward", targets, s.cols);
  launch_cross_entropy_backward(launch_of(ctx), s.dtype, dlogits.data(), logits.data(), lse.ptr<float>(),
                                targets.ptr<std::int32_t>(), dloss, s.rows, s.cols);
}

void embedding_forward(Context& ctx, Tensor& out, const Tensor& ids, const Tensor& table, bool accumulate) {
  const RowsShape s = kernel_check::embedding_forward(ctx.device(), out, ids, table, accumulate);
  if (s.rows == 0) return;
  check_ids(ctx, "embedding_forward", ids, s.table_rows);
  launch_embedding_forward(launch_of(ctx), s.dtype, out.data(), ids.ptr<std::int32_t>(), table.data(), s.rows, s.cols,
                           accumulate);
}

void embedding_backward(Context& ctx, Tensor& dtable, const Tensor& ids, const Tensor& dout) {
  const RowsShape s = kernel_check::embedding_backward(ctx.device(), dtable, ids, dout);
  if (s.rows == 0) return;
  check_ids(ctx, "embedding_backward", ids, s.table_rows);
  launch_embedding_backward(launch_of(ctx), s.dtype, dtable.ptr<float>(), ids.ptr<std::int32_t>(), dout.data(), s.rows,
                            s.cols);
}

void add(Context& ctx, Tensor& out, const Tensor& a, const Tensor& b) {
  const ElementsShape s = kernel_check::add(ctx.device(), out, a, b);
  launch_add(launch_of(ctx), s.dtype, out.data(), a.data(), b.data(), s.n);
}

void axpby(Context& ctx, Tensor& y, const Tensor& x, float alpha, float beta) {
  const ElementsShape s = kernel_check::axpby(ctx.device(), y, x, alpha, beta);
  launch_axpby(launch_of(ctx), s.dtype, y.data(), x.data(), alpha, beta, s.n);
}

void fill(Context& ctx, Tensor& t, float value) {
  const ElementsShape s = kernel_check::fill(ctx.device(), t, value);
  switch (s.dtype) {
    case DType::f64:
      launch_fill_bits(launch_of(ctx), t.data(), bits_of(static_cast<double>(value)), 8, s.n);
      break;
    case DType::bf16:
      launch_fill_bits(launch_of(ctx), t.data(), float_to_bf16(value), 2, s.n);
      break;
    case DType::f16:
      launch_fill_bits(launch_of(ctx), t.data(), float_to_f16(value), 2, s.n);
      break;
    default:
      launch_fill_bits(launch_of(ctx), t.data(), bits_of(value), 4, s.n);
      break;
  }
}

void convert(Context& ctx, Tensor& out, const Tensor& in) {
  const ElementsShape s = kernel_check::convert(ctx.device(), out, in);
  if (out.dtype() == in.dtype()) {
    if (out.data() == in.data() || in.bytes() == 0) return;
    KernelChecker("convert", ctx.device()).disjoint(out, in, "out", "in");  // a cudaMemcpyAsync may not overlap
    NEOX_CUDA_CHECK(cudaMemcpyAsync(out.data(), in.data(), in.bytes(), cudaMemcpyDeviceToDevice, ctx.stream()));
    return;
  }
  launch_convert(launch_of(ctx), out.dtype(), out.data(), in.dtype(), in.data(), s.n);
}

namespace {

double reduce(Context& ctx, const ElementsShape& s, const Tensor& x, bool squares) {
  if (s.n == 0) return 0.0;
  constexpr int kMaxPartials = 1024;
  DeviceBuffer partials = ctx.temp(kMaxPartials * sizeof(double));
  const int n =
      launch_sum_partials(launch_of(ctx), s.dtype, partials.as<double>(), kMaxPartials, x.data(), s.n, squares);
  std::vector<double> host(static_cast<std::size_t>(n));
  ctx.download(host.data(), partials.get(), host.size() * sizeof(double));
  double total = 0.0;
  for (double v : host) total += v;
  return total;
}

}  // namespace

double sum_squares(Context& ctx, const Tensor& x) {
  return reduce(ctx, kernel_check::sum_squares(ctx.device(), x), x, true);
}

double sum(Context& ctx, const Tensor& x) { return reduce(ctx, kernel_check::sum(ctx.device(), x), x, false); }

void adamw_update(Context& ctx, Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWParams& p) {
  const ElementsShape s = kernel_check::adamw_update(ctx.device(), param, grad, m, v, p);
  // The step's constants in double, as the cpu backend computes them.
  const double lr = p.lr, b1 = p.beta1, b2 = p.beta2;
  const double step = static_cast<double>(p.step);
  AdamWConstants k;
  k.lr_decay = 1.0 - lr * static_cast<double>(p.weight_decay);
  k.beta1 = b1;
  k.beta2 = b2;
  k.step_size = lr / (1.0 - std::pow(b1, step));
  k.bc2_sqrt = std::sqrt(1.0 - std::pow(b2, step));
  k.eps = p.eps;
  k.grad_scale = p.grad_scale;
  launch_adamw(launch_of(ctx), param.ptr<float>(), grad.ptr<float>(), m.ptr<float>(), v.ptr<float>(), k, s.n);
}

}  // namespace neox::cuda
