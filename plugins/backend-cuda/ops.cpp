// SPDX-License-Identifier: Apache-2.0
// Argument checks and launches of the cuda ops other than matmul, rotary and
// attention. Dtype roles (neox/kernels.h, "Precision"): activations and the
// parameters a forward reads share the call's compute dtype (f32, bf16 or
// f16); parameter gradients, statistics and optimizer state are f32.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "check.h"
#include "cuda_check.h"
#include "launch.h"
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
  launch_column_partials(l, dt, pdb.as<float>(), dw ? pdw.as<float>() : nullptr, dout, inp, mean, rstd, N,
                         C, chunks, rows_per_chunk);
  launch_column_finalize(l, db, pdb.as<float>(), chunks, C);
  if (dw) launch_column_finalize(l, dw, pdw.as<float>(), chunks, C);
}

// Targets must be < V (negative means ignored); synchronises to find out.
void check_targets(Context& ctx, const Checker& ck, const Tensor& targets, std::int64_t V) {
  const auto* t = targets.ptr<std::int32_t>();
  const std::int64_t bad = ctx.first_bad_index(t, targets.numel(), V, /*allow_negative=*/true);
  if (bad < 0) return;
  std::int32_t value = 0;
  ctx.download(&value, t + bad, sizeof value);
  ck.fail("target " + std::to_string(value) + " in row " + std::to_string(bad) + " is outside the vocabulary [0, " +
          std::to_string(V) + ") (negative targets mark ignored positions)");
}

// Every id must name a row of the table; synchronises to find out.
void check_ids(Context& ctx, const Checker& ck, const Tensor& ids, std::int64_t V) {
  const auto* p = ids.ptr<std::int32_t>();
  const std::int64_t n = ctx.first_bad_index(p, ids.numel(), V, /*allow_negative=*/false);
  if (n < 0) return;
  std::int32_t value = 0;
  ctx.download(&value, p + n, sizeof value);
  std::string where = "position " + std::to_string(n);
  if (ids.ndim() == 2 && ids.dim(1) > 0)
    where += " (row " + std::to_string(n / ids.dim(1)) + ", column " + std::to_string(n % ids.dim(1)) + ")";
  ck.fail("id " + std::to_string(value) + " at " + where + " of ids " + ids.str() + " is outside the table's rows [0, " +
          std::to_string(V) + ")");
}

template <typename T> std::uint64_t bits_of(T v) {
  static_assert(sizeof(T) <= sizeof(std::uint64_t));
  std::uint64_t out = 0;
  std::memcpy(&out, &v, sizeof v);
  return out;
}

}  // namespace

void add_bias(Context& ctx, Tensor& out, const Tensor& bias) {
  Checker ck("add_bias", ctx.device());
  const DType dt = ck.activation(out, "out");
  const MatrixShape m = ck.matrix(out, dt, "out");
  ck.matrix_shape(bias, dt, 1, m.cols, "bias", "one value per column of out " + out.str());
  if (bias.ndim() != 1) ck.fail("bias " + bias.str() + " must be 1-D");
  launch_add_bias(launch_of(ctx), dt, out.data(), bias.data(), m.rows, m.cols);
}

void bias_backward(Context& ctx, Tensor& dbias, const Tensor& dout) {
  Checker ck("bias_backward", ctx.device());
  const DType dt = ck.activation(dout, "dout");
  const MatrixShape m = ck.matrix(dout, dt, "dout");
  ck.matrix_shape(dbias, DType::f32, 1, m.cols, "dbias", "one value per column of dout " + dout.str());
  if (dbias.ndim() != 1) ck.fail("dbias " + dbias.str() + " must be 1-D");
  ck.disjoint(dbias, dout, "dbias", "dout");
  column_gradients(ctx, dt, dbias.ptr<float>(), nullptr, dout.data(), nullptr, nullptr, nullptr, m.rows,
                   m.cols);
}

void layernorm_forward(Context& ctx, Tensor& out, Tensor& mean, Tensor& rstd, const Tensor& inp,
                       const Tensor& weight, const Tensor& bias, float eps) {
  Checker ck("layernorm_forward", ctx.device());
  const DType dt = ck.activation(inp, "inp");
  const MatrixShape m = ck.matrix(inp, dt, "inp");
  const std::string per_col = "one value per column of inp " + inp.str();
  const std::string per_row = "one value per row of inp " + inp.str();
  ck.matrix_shape(out, dt, m.rows, m.cols, "out", "the shape of inp " + inp.str());
  ck.numel(weight, dt, m.cols, "weight", per_col);
  ck.numel(bias, dt, m.cols, "bias", per_col);
  ck.numel(mean, DType::f32, m.rows, "mean", per_row);
  ck.numel(rstd, DType::f32, m.rows, "rstd", per_row);
  if (!(eps >= 0.0f)) ck.fail("eps must be >= 0, got " + std::to_string(eps));
  if (m.cols == 0) ck.fail("inp " + inp.str() + " has no columns");
  launch_layernorm_forward(launch_of(ctx), dt, out.data(), mean.ptr<float>(), rstd.ptr<float>(), inp.data(),
                           weight.data(), bias.data(), m.rows, m.cols, eps);
}

void layernorm_backward(Context& ctx, Tensor& dinp, Tensor& dweight, Tensor& dbias, const Tensor& dout,
                        const Tensor& inp, const Tensor& weight, const Tensor& mean, const Tensor& rstd) {
  Checker ck("layernorm_backward", ctx.device());
  const DType dt = ck.activation(inp, "inp");
  const MatrixShape m = ck.matrix(inp, dt, "inp");
  const std::string per_col = "one value per column of inp " + inp.str();
  const std::string per_row = "one value per row of inp " + inp.str();
  ck.matrix_shape(dout, dt, m.rows, m.cols, "dout", "the shape of inp " + inp.str());
  ck.matrix_shape(dinp, dt, m.rows, m.cols, "dinp", "the shape of inp " + inp.str());
  ck.numel(weight, dt, m.cols, "weight", per_col);
  ck.numel(dweight, DType::f32, m.cols, "dweight", per_col);
  ck.numel(dbias, DType::f32, m.cols, "dbias", per_col);
  ck.numel(mean, DType::f32, m.rows, "mean", per_row);
  ck.numel(rstd, DType::f32, m.rows, "rstd", per_row);
  if (m.cols == 0) ck.fail("inp " + inp.str() + " has no columns");
  ck.disjoint(dinp, dout, "dinp", "dout");
  ck.disjoint(dweight, dbias, "dweight", "dbias");
  // Parameter gradients first: they read inp, which the input gradient does not change
  // unless the caller aliased them (the cpu backend reads inp after dinp; both are fine
  // for disjoint tensors).
  column_gradients(ctx, dt, dbias.ptr<float>(), dweight.ptr<float>(), dout.data(), inp.data(), mean.ptr<float>(),
                   rstd.ptr<float>(), m.rows, m.cols);
  launch_layernorm_backward_input(launch_of(ctx), dt, dinp.data(), dout.data(), inp.data(), weight.data(),
                                  mean.ptr<float>(), rstd.ptr<float>(), m.rows, m.cols);
}

void gelu_forward(Context& ctx, Tensor& out, const Tensor& inp) {
  Checker ck("gelu_forward", ctx.device());
  const DType dt = ck.activation(inp, "inp");
  ck.numel(out, dt, inp.numel(), "out", "as many as inp " + inp.str());
  launch_gelu_forward(launch_of(ctx), dt, out.data(), inp.data(), inp.numel());
}

void gelu_backward(Context& ctx, Tensor& dinp, const Tensor& inp, const Tensor& dout) {
  Checker ck("gelu_backward", ctx.device());
  const DType dt = ck.activation(inp, "inp");
  ck.numel(dout, dt, inp.numel(), "dout", "as many as inp " + inp.str());
  ck.numel(dinp, dt, inp.numel(), "dinp", "as many as inp " + inp.str());
  launch_gelu_backward(launch_of(ctx), dt, dinp.data(), inp.data(), dout.data(), inp.numel());
}

void cross_entropy_forward(Context& ctx, Tensor& losses, Tensor& lse, const Tensor& logits,
                           const Tensor& targets) {
  Checker ck("cross_entropy_forward", ctx.device());
  const DType dt = ck.activation(logits, "logits");
  const MatrixShape m = ck.matrix(logits, dt, "logits");
  const std::string per_row = "one per row of logits " + logits.str();
  ck.numel(targets, DType::i32, m.rows, "targets", per_row);
  ck.numel(losses, DType::f32, m.rows, "losses", per_row);
  ck.numel(lse, DType::f32, m.rows, "lse", per_row);
  if (m.cols == 0 && m.rows > 0) ck.fail("logits " + logits.str() + " has an empty vocabulary");
  ck.disjoint(losses, logits, "losses", "logits");
  ck.disjoint(lse, logits, "lse", "logits");
  ck.disjoint(losses, lse, "losses", "lse");
  if (m.rows == 0) return;
  check_targets(ctx, ck, targets, m.cols);
  launch_cross_entropy_forward(launch_of(ctx), dt, losses.ptr<float>(), lse.ptr<float>(), logits.data(),
                               targets.ptr<std::int32_t>(), m.rows, m.cols);
}

void cross_entropy_backward(Context& ctx, Tensor& dlogits, const Tensor& logits, const Tensor& lse,
                            const Tensor& targets, float dloss) {
  Checker ck("cross_entropy_backward", ctx.device());
  const DType dt = ck.activation(logits, "logits");
  const MatrixShape m = ck.matrix(logits, dt, "logits");
  const std::string per_row = "one per row of logits " + logits.str();
  ck.matrix_shape(dlogits, dt, m.rows, m.cols, "dlogits", "the shape of logits " + logits.str());
  ck.numel(targets, DType::i32, m.rows, "targets", per_row);
  ck.numel(lse, DType::f32, m.rows, "lse", per_row);
  if (dlogits.data() != logits.data()) ck.disjoint(dlogits, logits, "dlogits", "logits");
  ck.disjoint(dlogits, lse, "dlogits", "lse");
  if (m.rows == 0) return;
  check_targets(ctx, ck, targets, m.cols);
  launch_cross_entropy_backward(launch_of(ctx), dt, dlogits.data(), logits.data(), lse.ptr<float>(),
                                targets.ptr<std::int32_t>(), dloss, m.rows, m.cols);
}

void embedding_forward(Context& ctx, Tensor& out, const Tensor& ids, const Tensor& table, bool accumulate) {
  Checker ck("embedding_forward", ctx.device());
  const DType dt = ck.activation(table, "table");
  const MatrixShape tm = ck.matrix(table, dt, "table");
  ck.require(ids, DType::i32, "ids");
  ck.matrix_shape(out, dt, ids.numel(), tm.cols, "out",
                  "one row of table " + table.str() + " per id in " + ids.str());
  ck.disjoint(out, table, "out", "table");
  if (ids.numel() == 0) return;
  check_ids(ctx, ck, ids, tm.rows);
  launch_embedding_forward(launch_of(ctx), dt, out.data(), ids.ptr<std::int32_t>(), table.data(), ids.numel(),
                           tm.cols, accumulate);
}

void embedding_backward(Context& ctx, Tensor& dtable, const Tensor& ids, const Tensor& dout) {
  Checker ck("embedding_backward", ctx.device());
  const MatrixShape tm = ck.matrix(dtable, DType::f32, "dtable");
  ck.require(ids, DType::i32, "ids");
  const DType dt = ck.activation(dout, "dout");
  ck.matrix_shape(dout, dt, ids.numel(), tm.cols, "dout",
                  "one row of dtable " + dtable.str() + " per id in " + ids.str());
  ck.disjoint(dtable, dout, "dtable", "dout");
  if (ids.numel() == 0) return;
  check_ids(ctx, ck, ids, tm.rows);
  launch_embedding_backward(launch_of(ctx), dt, dtable.ptr<float>(), ids.ptr<std::int32_t>(), dout.data(),
                            ids.numel(), tm.cols);
}

void add(Context& ctx, Tensor& out, const Tensor& a, const Tensor& b) {
  Checker ck("add", ctx.device());
  const DType dt = ck.activation(a, "a");
  ck.numel(b, dt, a.numel(), "b", "as many as a " + a.str());
  ck.numel(out, dt, a.numel(), "out", "as many as a " + a.str());
  launch_add(launch_of(ctx), dt, out.data(), a.data(), b.data(), a.numel());
}

void axpby(Context& ctx, Tensor& y, const Tensor& x, float alpha, float beta) {
  Checker ck("axpby", ctx.device());
  const DType dt = ck.activation(x, "x");
  ck.numel(y, dt, x.numel(), "y", "as many as x " + x.str());
  launch_axpby(launch_of(ctx), dt, y.data(), x.data(), alpha, beta, x.numel());
}

void fill(Context& ctx, Tensor& t, float value) {
  Checker ck("fill", ctx.device());
  ck.on_device(t, "t");
  switch (t.dtype()) {
    case DType::f32: launch_fill_bits(launch_of(ctx), t.data(), bits_of(value), 4, t.numel()); break;
    case DType::f64:
      launch_fill_bits(launch_of(ctx), t.data(), bits_of(static_cast<double>(value)), 8, t.numel());
      break;
    case DType::bf16: launch_fill_bits(launch_of(ctx), t.data(), float_to_bf16(value), 2, t.numel()); break;
    case DType::f16: launch_fill_bits(launch_of(ctx), t.data(), float_to_f16(value), 2, t.numel()); break;
    default: ck.fail("t " + t.str() + " must be f32, f64, bf16 or f16");
  }
}

void convert(Context& ctx, Tensor& out, const Tensor& in) {
  Checker ck("convert", ctx.device());
  ck.on_device(in, "in");
  ck.on_device(out, "out");
  if (!is_float_dtype(in.dtype()) || !is_float_dtype(out.dtype()))
    ck.fail("converts among f32, bf16 and f16; got in " + in.str() + " and out " + out.str());
  if (out.numel() != in.numel())
    ck.fail("out " + out.str() + " has " + std::to_string(out.numel()) + " elements but in " + in.str() + " has " +
            std::to_string(in.numel()));
  if (out.dtype() == in.dtype()) {
    if (out.data() == in.data() || in.bytes() == 0) return;
    ck.disjoint(out, in, "out", "in");
    NEOX_CUDA_CHECK(cudaMemcpyAsync(out.data(), in.data(), in.bytes(), cudaMemcpyDeviceToDevice, ctx.stream()));
    return;
  }
  ck.disjoint(out, in, "out", "in");
  launch_convert(launch_of(ctx), out.dtype(), out.data(), in.dtype(), in.data(), in.numel());
}

namespace {

double reduce(Context& ctx, const char* op, const Tensor& x, bool squares) {
  Checker ck(op, ctx.device());
  const DType dt = ck.activation(x, "x");
  if (x.numel() == 0) return 0.0;
  constexpr int kMaxPartials = 1024;
  DeviceBuffer partials = ctx.temp(kMaxPartials * sizeof(double));
  const int n = launch_sum_partials(launch_of(ctx), dt, partials.as<double>(), kMaxPartials, x.data(), x.numel(),
                                    squares);
  std::vector<double> host(static_cast<std::size_t>(n));
  ctx.download(host.data(), partials.get(), host.size() * sizeof(double));
  double total = 0.0;
  for (double v : host) total += v;
  return total;
}

}  // namespace

double sum_squares(Context& ctx, const Tensor& x) { return reduce(ctx, "sum_squares", x, true); }

double sum(Context& ctx, const Tensor& x) { return reduce(ctx, "sum", x, false); }

void adamw_update(Context& ctx, Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWParams& p) {
  Checker ck("adamw_update", ctx.device());
  ck.require(param, DType::f32, "param");
  const std::string same = "as many as param " + param.str();
  ck.numel(grad, DType::f32, param.numel(), "grad", same);
  ck.numel(m, DType::f32, param.numel(), "m", same);
  ck.numel(v, DType::f32, param.numel(), "v", same);
  if (p.step < 1) ck.fail("step must be >= 1 (1-based), got " + std::to_string(p.step));
  if (!(p.beta1 >= 0.0f && p.beta1 < 1.0f) || !(p.beta2 >= 0.0f && p.beta2 < 1.0f))
    ck.fail("betas must be in [0, 1), got (" + std::to_string(p.beta1) + ", " + std::to_string(p.beta2) + ")");
  ck.disjoint(param, grad, "param", "grad");
  ck.disjoint(param, m, "param", "m");
  ck.disjoint(param, v, "param", "v");
  ck.disjoint(m, v, "m", "v");
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
  launch_adamw(launch_of(ctx), param.ptr<float>(), grad.ptr<float>(), m.ptr<float>(), v.ptr<float>(), k,
               param.numel());
}

}  // namespace neox::cuda
