// SPDX-License-Identifier: Apache-2.0
#include "neox/kernel_contract.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iterator>
#include <string>

#include "neox/error.h"

namespace neox {

// ---------------------------------------------------------------- flops and bytes

namespace {

using Measure = double (*)(const KernelCall&);

double bytes(const Tensor& t) { return static_cast<double>(t.bytes()); }

MatrixShape matrix_view(const Tensor& t) {
  MatrixShape m;
  if (t.ndim() < 1) return m;
  m.cols = t.dim(-1);
  m.rows = 1;
  for (int i = 0; i + 1 < t.ndim(); ++i) m.rows *= t.dim(i);
  return m;
}

// The call as the op's signature has it: `tensors` Tensor and `scalars` other arguments.
bool fits(const KernelCall& call, std::size_t tensors, std::size_t scalars) {
  return call.tensors().size() == tensors && call.scalars().size() == scalars;
}

// Every tensor read once, written once, or both, by its access.
template <const auto& args>
double access_bytes(const KernelCall& call) {
  const auto t = call.tensors();
  if (t.size() != std::size(args)) return 0;
  double total = 0;
  for (std::size_t i = 0; i < t.size(); ++i)
    total += bytes(*t[i]) * (args[i].access == ArgAccess::read_write ? 2.0 : 1.0);
  return total;
}

// matmul(c, a, b, trans_a, trans_b, alpha, beta): 2 M N K, K from a.
double matmul_flops(const KernelCall& call) {
  if (!fits(call, 3, 4)) return 0;
  const MatrixShape c = matrix_view(*call.tensors()[0]), a = matrix_view(*call.tensors()[1]);
  const double K = static_cast<double>(call.scalars()[0] != 0 ? a.rows : a.cols);
  return 2.0 * static_cast<double>(c.rows) * static_cast<double>(c.cols) * K;
}

// c is read only when beta != 0.
double matmul_bytes(const KernelCall& call) {
  if (!fits(call, 3, 4)) return 0;
  const auto t = call.tensors();
  return bytes(*t[1]) + bytes(*t[2]) + bytes(*t[0]) * (call.scalars()[3] != 0 ? 2.0 : 1.0);
}

// Causal attention over qkv[B, T, 3C]: q k^T and p v over half of the T x T
// square (FlashAttention's count); the backward recomputes q k^T, then dv,
// dp, dq and dk: five products.
double causal_attention_flops(const KernelCall& call, std::size_t qkv_index, double products) {
  if (call.tensors().size() <= qkv_index) return 0;
  const Tensor& qkv = *call.tensors()[qkv_index];
  if (qkv.ndim() != 3) return 0;
  const double B = static_cast<double>(qkv.dim(0)), T = static_cast<double>(qkv.dim(1));
  const double C = static_cast<double>(qkv.dim(2) / 3);
  return products * B * T * T * C;
}
double attention_forward_flops(const KernelCall& call) {
  return fits(call, 3, 1) ? causal_attention_flops(call, 2, 2.0) : 0;
}
double attention_backward_flops(const KernelCall& call) {
  return fits(call, 5, 1) ? causal_attention_flops(call, 2, 5.0) : 0;
}

// attention_decode(out, k_cache, v_cache, qkv, n_head, position_offset): the
// caches' positions [0, position_offset + Tq) read, Tq of them written; qkv
// read, out written.
double attention_decode_bytes(const KernelCall& call) {
  if (!fits(call, 4, 2)) return 0;
  const auto t = call.tensors();
  const Tensor &out = *t[0], &k = *t[1], &v = *t[2], &qkv = *t[3];
  double caches = 0;
  if (k.ndim() == 4 && k.dim(2) > 0 && qkv.ndim() == 3) {
    const double max_t = static_cast<double>(k.dim(2)), tq = static_cast<double>(qkv.dim(1));
    const double read = std::min(max_t, std::max(0.0, call.scalars()[1]) + tq);
    caches = (bytes(k) + bytes(v)) / max_t * (read + tq);
  }
  return caches + bytes(qkv) + bytes(out);
}

// embedding_forward(out, ids, table, accumulate): the rows of the table that
// ids name are read, out written (and read when accumulating).
double embedding_forward_bytes(const KernelCall& call) {
  if (!fits(call, 3, 1)) return 0;
  const auto t = call.tensors();
  const Tensor &out = *t[0], &ids = *t[1], &table = *t[2];
  const double rows = static_cast<double>(out.numel()) * static_cast<double>(dtype_size(table.dtype()));
  return rows + bytes(ids) + bytes(out) * (call.scalars()[0] != 0 ? 2.0 : 1.0);
}

// embedding_backward(dtable, ids, dout): dout and ids read, the rows of
// dtable that ids name read and written.
double embedding_backward_bytes(const KernelCall& call) {
  if (!fits(call, 3, 0)) return 0;
  const auto t = call.tensors();
  const Tensor &dtable = *t[0], &ids = *t[1], &dout = *t[2];
  return bytes(dout) + bytes(ids) +
         2.0 * static_cast<double>(dout.numel()) * static_cast<double>(dtype_size(dtable.dtype()));
}

// axpby(y, x, alpha, beta): y is read only when beta != 0.
double axpby_bytes(const KernelCall& call) {
  if (!fits(call, 2, 2)) return 0;
  const auto t = call.tensors();
  return bytes(*t[1]) + bytes(*t[0]) * (call.scalars()[1] != 0 ? 2.0 : 1.0);
}

constexpr Measure flops_of(std::string_view op) {
  if (op == "matmul") return matmul_flops;
  if (op == "attention_forward") return attention_forward_flops;
  if (op == "attention_backward") return attention_backward_flops;
  return nullptr;
}

template <const auto& args>
constexpr Measure bytes_of(std::string_view op) {
  if (op == "matmul") return matmul_bytes;
  if (op == "attention_decode") return attention_decode_bytes;
  if (op == "embedding_forward") return embedding_forward_bytes;
  if (op == "embedding_backward") return embedding_backward_bytes;
  if (op == "axpby") return axpby_bytes;
  return access_bytes<args>;
}

constexpr KernelOpInfo kOps[] = {
#define NEOX_OP_INFO(name) {#name, kernel_args::name, flops_of(#name), bytes_of<kernel_args::name>(#name)},
    NEOX_KERNEL_OPS(NEOX_OP_INFO)
#undef NEOX_OP_INFO
};

}  // namespace

const KernelOpInfo& kernel_op_info(std::string_view op) {
  for (const KernelOpInfo& info : kOps)
    if (info.name == op) return info;
  std::string names;
  for (const KernelOpInfo& info : kOps) names += (names.empty() ? "" : ", ") + std::string(info.name);
  throw Error("unknown kernel operation '" + std::string(op) + "' (known: " + names + ")");
}

std::span<const KernelOpInfo> kernel_op_infos() { return kOps; }

// ---------------------------------------------------------------- KernelChecker

namespace {

bool float_dtype(DType t) { return t == DType::f32 || t == DType::bf16 || t == DType::f16; }

std::string describe(const char* what, const Tensor& t) { return std::string(what) + " " + t.str(); }

}  // namespace

void KernelChecker::fail(const std::string& message) const { throw Error(std::string(op_) + ": " + message); }

DType KernelChecker::precision(std::span<const Tensor* const> tensors) const {
  const std::span<const KernelArg> args = kernel_op_info(op_).args;
  if (tensors.size() != args.size())
    fail("checked with " + std::to_string(tensors.size()) + " tensors; the op has " + std::to_string(args.size()));
  for (std::size_t i = 0; i < args.size(); ++i) on_device(*tensors[i], args[i].name);
  if (args.empty()) return DType::f32;
  // The first activation sets the compute dtype; the others must have it.
  std::size_t lead = args.size();
  for (std::size_t i = 0; i < args.size() && lead == args.size(); ++i)
    if (args[i].role == ArgRole::activation) lead = i;
  if (lead == args.size()) {
    lead = 0;  // no activation: f32, and no "like ..." in the messages
  } else if (!float_dtype(tensors[lead]->dtype())) {
    fail(describe(args[lead].name, *tensors[lead]) + " must be f32, bf16 or f16");
  }
  const bool has_lead = args[lead].role == ArgRole::activation;
  const DType compute = has_lead ? tensors[lead]->dtype() : DType::f32;
  // "<arg> <tensor> must be <compute dtype> like <lead> <tensor>", built only to fail
  auto must_be_compute = [&](std::size_t i) {
    return describe(args[i].name, *tensors[i]) + " must be " + std::string(dtype_name(compute)) + " like " +
           describe(args[lead].name, *tensors[lead]);
  };
  for (std::size_t i = 0; i < args.size(); ++i)
    if (args[i].role == ArgRole::activation && tensors[i]->dtype() != compute)
      fail(must_be_compute(i) + " (the activations and weights of one call share one dtype: f32, bf16 or f16)");
  for (std::size_t i = 0; i < args.size(); ++i) {
    const DType t = tensors[i]->dtype();
    switch (args[i].role) {
      case ArgRole::product:  // only with activations (matmul's c)
        if (t != compute && t != DType::f32) fail(must_be_compute(i) + ", or f32 (a weight gradient)");
        break;
      case ArgRole::f32:
        if (t != DType::f32)
          fail(describe(args[i].name, *tensors[i]) + " must be f32 whatever the compute dtype" +
               (has_lead ? " (" + std::string(dtype_name(compute)) + ")" : std::string()) +
               ": parameter gradients, per-row statistics and optimizer state are always f32");
        break;
      case ArgRole::index:
        if (t != DType::i32) fail(describe(args[i].name, *tensors[i]) + " must be i32");
        break;
      case ArgRole::activation:
      case ArgRole::native:
        break;
    }
  }
  return compute;
}

void KernelChecker::on_device(const Tensor& t, const char* what) const {
  if (!t.defined()) fail(std::string(what) + " is an undefined tensor");
  if (t.device() == device_) return;
  if (device_.is_cpu()) fail(describe(what, t) + " is not in host memory (the cpu backend runs on the host)");
  const std::string device = device_name(device_);
  std::string msg = describe(what, t) + " is not on " + device + " (the " + device.substr(0, device.find(':')) +
                    " backend runs on " + device;
  if (t.device().is_cpu()) msg += "; copy host tensors to the device first, e.g. with Backend::to_device";
  fail(msg + ")");
}

void KernelChecker::require(const Tensor& t, DType dtype, const char* what) const {
  on_device(t, what);
  if (t.dtype() != dtype) fail(describe(what, t) + " must be " + std::string(dtype_name(dtype)));
}

MatrixShape KernelChecker::matrix(const Tensor& t, DType dtype, const char* what) const {
  require(t, dtype, what);
  if (t.ndim() < 1) fail(describe(what, t) + " must have rank >= 1");
  return matrix_view(t);
}

void KernelChecker::numel(const Tensor& t, DType dtype, std::int64_t n, const char* what,
                          const std::string& expected) const {
  require(t, dtype, what);
  if (t.numel() != n)
    fail(describe(what, t) + " has " + std::to_string(t.numel()) + " elements, expected " + std::to_string(n) + " (" +
         expected + ")");
}

void KernelChecker::matrix_shape(const Tensor& t, DType dtype, std::int64_t rows, std::int64_t cols, const char* what,
                                 const std::string& expected) const {
  const MatrixShape m = matrix(t, dtype, what);
  if (m.rows != rows || m.cols != cols)
    fail(describe(what, t) + " is used as a [" + std::to_string(m.rows) + ", " + std::to_string(m.cols) +
         "] matrix, expected [" + std::to_string(rows) + ", " + std::to_string(cols) + "] (" + expected + ")");
}

void KernelChecker::disjoint(const Tensor& a, const Tensor& b, const char* what_a, const char* what_b) const {
  const auto a0 = reinterpret_cast<std::uintptr_t>(a.data());
  const auto b0 = reinterpret_cast<std::uintptr_t>(b.data());
  if (a.bytes() == 0 || b.bytes() == 0) return;
  if (a0 < b0 + b.bytes() && b0 < a0 + a.bytes())
    fail(describe(what_a, a) + " overlaps " + describe(what_b, b) + " in memory; this operation cannot run in place");
}

QkvShape KernelChecker::qkv(const Tensor& qkv, DType dtype, int n_head, const char* what) const {
  require(qkv, dtype, what);
  if (qkv.ndim() != 3) fail(describe(what, qkv) + " must be [B, T, 3*C]");
  if (n_head <= 0) fail("n_head must be positive, got " + std::to_string(n_head));
  QkvShape s;
  s.dtype = dtype;
  s.B = qkv.dim(0);
  s.T = qkv.dim(1);
  if (qkv.dim(2) % 3 != 0) fail(describe(what, qkv) + ": last dimension is not 3*C");
  s.C = qkv.dim(2) / 3;
  if (s.C == 0) fail(describe(what, qkv) + " has no channels");
  s.n_head = n_head;
  if (s.C % n_head != 0)
    fail("C = " + std::to_string(s.C) + " (from " + describe(what, qkv) +
         ") is not divisible by n_head = " + std::to_string(n_head));
  s.hs = s.C / n_head;
  return s;
}

void KernelChecker::target_out_of_range(std::int64_t row, std::int64_t target, std::int64_t V) const {
  fail("target " + std::to_string(target) + " in row " + std::to_string(row) + " is outside the vocabulary [0, " +
       std::to_string(V) + ") (negative targets mark ignored positions)");
}

void KernelChecker::id_out_of_range(const Tensor& ids, std::int64_t position, std::int64_t id,
                                    std::int64_t table_rows) const {
  std::string where = "position " + std::to_string(position);
  if (ids.ndim() == 2 && ids.dim(1) > 0)
    where +=
        " (row " + std::to_string(position / ids.dim(1)) + ", column " + std::to_string(position % ids.dim(1)) + ")";
  fail("id " + std::to_string(id) + " at " + where + " of ids " + ids.str() + " is outside the table's rows [0, " +
       std::to_string(table_rows) + ")");
}

// ---------------------------------------------------------------- the checks of each op

namespace kernel_check {
namespace {

std::string dims(std::int64_t r, std::int64_t c) {
  std::string s("[");  // built by appending: GCC 12 warns falsely (-Wrestrict) on "[" + std::string
  s += std::to_string(r);
  s += ", ";
  s += std::to_string(c);
  s += "]";
  return s;
}

// The elements of every tensor equal those of `first`.
ElementsShape same_numel(const KernelChecker& ck, DType dt, const Tensor& first, const char* first_name,
                         std::initializer_list<std::pair<const Tensor*, const char*>> others) {
  const std::string expected = "as many as " + describe(first_name, first);
  for (const auto& [t, name] : others) ck.numel(*t, t->dtype(), first.numel(), name, expected);
  return {dt, first.numel()};
}

QkvShape rotary(const char* op, const char* what, Device device, const Tensor& qkv, int n_head, int rotary_dims,
                float base, std::int64_t position_offset) {
  const KernelChecker ck(op, device);
  const QkvShape s = ck.qkv(qkv, ck.precision({&qkv}), n_head, what);
  if (rotary_dims < 0 || rotary_dims % 2 != 0 || rotary_dims > s.hs)
    ck.fail("rotary_dims = " + std::to_string(rotary_dims) +
            " must be even and in [0, head size = " + std::to_string(s.hs) + "]");
  if (!(base > 0.0f) || !std::isfinite(base)) ck.fail("base must be a positive number, got " + std::to_string(base));
  if (position_offset < 0) ck.fail("position_offset must be >= 0, got " + std::to_string(position_offset));
  return s;
}

ElementsShape reduction(const char* op, Device device, const Tensor& x) {
  const KernelChecker ck(op, device);
  ck.precision({&x});
  if (!float_dtype(x.dtype())) ck.fail(describe("x", x) + " must be f32, bf16 or f16");
  return {x.dtype(), x.numel()};
}

}  // namespace

MatmulShape matmul(Device device, const Tensor& c, const Tensor& a, const Tensor& b, bool trans_a, bool trans_b, float,
                   float) {
  const KernelChecker ck("matmul", device);
  MatmulShape s;
  s.dtype = ck.precision({&c, &a, &b});
  s.c_dtype = c.dtype();
  const MatrixShape cm = ck.matrix(c, c.dtype(), "c");
  s.a = ck.matrix(a, s.dtype, "a");
  s.b = ck.matrix(b, s.dtype, "b");
  s.M = cm.rows;
  s.N = cm.cols;
  const std::int64_t a_m = trans_a ? s.a.cols : s.a.rows;
  s.K = trans_a ? s.a.rows : s.a.cols;
  const std::int64_t b_k = trans_b ? s.b.cols : s.b.rows;
  const std::int64_t b_n = trans_b ? s.b.rows : s.b.cols;
  if (a_m != s.M)
    ck.fail(std::string("op(a) = a") + (trans_a ? "^T" : "") + " is " + dims(a_m, s.K) + " (a is " + a.str() +
            ") but c " + c.str() + " has M = " + std::to_string(s.M) + " rows");
  if (b_k != s.K || b_n != s.N)
    ck.fail(std::string("op(b) = b") + (trans_b ? "^T" : "") + " is " + dims(b_k, b_n) + " (b is " + b.str() +
            ") but op(a) @ op(b) into c needs " + dims(s.K, s.N) + " (a is " + a.str() + ", c is " + c.str() + ")");
  ck.disjoint(c, a, "c", "a");
  ck.disjoint(c, b, "c", "b");
  return s;
}

RowsShape add_bias(Device device, const Tensor& out, const Tensor& bias) {
  const KernelChecker ck("add_bias", device);
  const DType dt = ck.precision({&out, &bias});
  const MatrixShape m = ck.matrix(out, dt, "out");
  ck.matrix_shape(bias, dt, 1, m.cols, "bias", "one value per column of out " + out.str());
  if (bias.ndim() != 1) ck.fail(describe("bias", bias) + " must be 1-D");
  return {dt, m.rows, m.cols, 0};
}

RowsShape bias_backward(Device device, const Tensor& dbias, const Tensor& dout) {
  const KernelChecker ck("bias_backward", device);
  const DType dt = ck.precision({&dbias, &dout});
  const MatrixShape m = ck.matrix(dout, dt, "dout");
  ck.matrix_shape(dbias, DType::f32, 1, m.cols, "dbias", "one value per column of dout " + dout.str());
  if (dbias.ndim() != 1) ck.fail(describe("dbias", dbias) + " must be 1-D");
  ck.disjoint(dbias, dout, "dbias", "dout");
  return {dt, m.rows, m.cols, 0};
}

RowsShape layernorm_forward(Device device, const Tensor& out, const Tensor& mean, const Tensor& rstd, const Tensor& inp,
                            const Tensor& weight, const Tensor& bias, float eps) {
  const KernelChecker ck("layernorm_forward", device);
  const DType dt = ck.precision({&out, &mean, &rstd, &inp, &weight, &bias});
  const MatrixShape m = ck.matrix(inp, dt, "inp");
  const std::string per_col = "one value per column of inp " + inp.str();
  const std::string per_row = "one value per row of inp " + inp.str();
  ck.matrix_shape(out, dt, m.rows, m.cols, "out", "the shape of inp " + inp.str());
  ck.numel(weight, dt, m.cols, "weight", per_col);
  ck.numel(bias, dt, m.cols, "bias", per_col);
  ck.numel(mean, DType::f32, m.rows, "mean", per_row);
  ck.numel(rstd, DType::f32, m.rows, "rstd", per_row);
  if (!(eps >= 0.0f)) ck.fail("eps must be >= 0, got " + std::to_string(eps));
  if (m.cols == 0) ck.fail(describe("inp", inp) + " has no columns");
  return {dt, m.rows, m.cols, 0};
}

RowsShape layernorm_backward(Device device, const Tensor& dinp, const Tensor& dweight, const Tensor& dbias,
                             const Tensor& dout, const Tensor& inp, const Tensor& weight, const Tensor& mean,
                             const Tensor& rstd) {
  const KernelChecker ck("layernorm_backward", device);
  const DType dt = ck.precision({&dinp, &dweight, &dbias, &dout, &inp, &weight, &mean, &rstd});
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
  if (m.cols == 0) ck.fail(describe("inp", inp) + " has no columns");
  ck.disjoint(dinp, dout, "dinp", "dout");
  ck.disjoint(dweight, dbias, "dweight", "dbias");
  return {dt, m.rows, m.cols, 0};
}

ElementsShape gelu_forward(Device device, const Tensor& out, const Tensor& inp) {
  const KernelChecker ck("gelu_forward", device);
  return same_numel(ck, ck.precision({&out, &inp}), inp, "inp", {{&out, "out"}});
}

ElementsShape gelu_backward(Device device, const Tensor& dinp, const Tensor& inp, const Tensor& dout) {
  const KernelChecker ck("gelu_backward", device);
  return same_numel(ck, ck.precision({&dinp, &inp, &dout}), inp, "inp", {{&dout, "dout"}, {&dinp, "dinp"}});
}

QkvShape rotary_forward(Device device, const Tensor& qkv, int n_head, int rotary_dims, float base,
                        std::int64_t position_offset) {
  return rotary("rotary_forward", "qkv", device, qkv, n_head, rotary_dims, base, position_offset);
}

QkvShape rotary_backward(Device device, const Tensor& dqkv, int n_head, int rotary_dims, float base,
                         std::int64_t position_offset) {
  return rotary("rotary_backward", "dqkv", device, dqkv, n_head, rotary_dims, base, position_offset);
}

QkvShape attention_forward(Device device, const Tensor& out, const Tensor& lse, const Tensor& qkv, int n_head) {
  const KernelChecker ck("attention_forward", device);
  const QkvShape s = ck.qkv(qkv, ck.precision({&out, &lse, &qkv}), n_head, "qkv");
  ck.matrix_shape(out, s.dtype, s.B * s.T, s.C, "out", "[B*T, C] for qkv " + qkv.str());
  ck.numel(lse, DType::f32, s.B * s.n_head * s.T, "lse", "[B, n_head, T] for qkv " + qkv.str());
  ck.disjoint(out, qkv, "out", "qkv");
  ck.disjoint(lse, qkv, "lse", "qkv");
  ck.disjoint(out, lse, "out", "lse");
  return s;
}

QkvShape attention_backward(Device device, const Tensor& dqkv, const Tensor& dout, const Tensor& qkv, const Tensor& out,
                            const Tensor& lse, int n_head) {
  const KernelChecker ck("attention_backward", device);
  const QkvShape s = ck.qkv(qkv, ck.precision({&dqkv, &dout, &qkv, &out, &lse}), n_head, "qkv");
  ck.matrix_shape(dqkv, s.dtype, s.B * s.T, 3 * s.C, "dqkv", "the shape of qkv " + qkv.str());
  ck.matrix_shape(dout, s.dtype, s.B * s.T, s.C, "dout", "[B*T, C] for qkv " + qkv.str());
  ck.matrix_shape(out, s.dtype, s.B * s.T, s.C, "out", "[B*T, C] for qkv " + qkv.str());
  ck.numel(lse, DType::f32, s.B * s.n_head * s.T, "lse", "[B, n_head, T] for qkv " + qkv.str());
  ck.disjoint(dqkv, dout, "dqkv", "dout");
  ck.disjoint(dqkv, qkv, "dqkv", "qkv");
  ck.disjoint(dqkv, out, "dqkv", "out");
  ck.disjoint(dqkv, lse, "dqkv", "lse");
  return s;
}

QkvShape attention_decode(Device device, const Tensor& out, const Tensor& k_cache, const Tensor& v_cache,
                          const Tensor& qkv, int n_head, std::int64_t position_offset) {
  const KernelChecker ck("attention_decode", device);
  QkvShape s = ck.qkv(qkv, ck.precision({&out, &k_cache, &v_cache, &qkv}), n_head, "qkv");
  ck.matrix_shape(out, s.dtype, s.B * s.T, s.C, "out", "[B*Tq, C] for qkv " + qkv.str());
  if (k_cache.ndim() != 4 || k_cache.dim(0) != s.B || k_cache.dim(1) != s.n_head || k_cache.dim(3) != s.hs)
    ck.fail(describe("k_cache", k_cache) + " must be [B, n_head, max_T, head size] = [" + std::to_string(s.B) + ", " +
            std::to_string(s.n_head) + ", max_T, " + std::to_string(s.hs) + "] for qkv " + qkv.str());
  if (v_cache.shape() != k_cache.shape())
    ck.fail(describe("v_cache", v_cache) + " must have the shape of k_cache " + k_cache.str());
  s.max_T = k_cache.dim(2);
  if (position_offset < 0) ck.fail("position_offset must be >= 0, got " + std::to_string(position_offset));
  if (position_offset + s.T > s.max_T)
    ck.fail("positions [" + std::to_string(position_offset) + ", " + std::to_string(position_offset + s.T) +
            ") do not fit the cache's max_T = " + std::to_string(s.max_T) + " (k_cache " + k_cache.str() + ")");
  ck.disjoint(out, qkv, "out", "qkv");
  ck.disjoint(out, k_cache, "out", "k_cache");
  ck.disjoint(out, v_cache, "out", "v_cache");
  ck.disjoint(k_cache, qkv, "k_cache", "qkv");
  ck.disjoint(v_cache, qkv, "v_cache", "qkv");
  ck.disjoint(k_cache, v_cache, "k_cache", "v_cache");
  return s;
}

RowsShape cross_entropy_forward(Device device, const Tensor& losses, const Tensor& lse, const Tensor& logits,
                                const Tensor& targets) {
  const KernelChecker ck("cross_entropy_forward", device);
  const DType dt = ck.precision({&losses, &lse, &logits, &targets});
  const MatrixShape m = ck.matrix(logits, dt, "logits");
  const std::string per_row = "one per row of logits " + logits.str();
  ck.numel(targets, DType::i32, m.rows, "targets", per_row);
  ck.numel(losses, DType::f32, m.rows, "losses", per_row);
  ck.numel(lse, DType::f32, m.rows, "lse", per_row);
  if (m.cols == 0 && m.rows > 0) ck.fail(describe("logits", logits) + " has an empty vocabulary");
  ck.disjoint(losses, logits, "losses", "logits");
  ck.disjoint(lse, logits, "lse", "logits");
  ck.disjoint(losses, lse, "losses", "lse");
  return {dt, m.rows, m.cols, 0};
}

RowsShape cross_entropy_backward(Device device, const Tensor& dlogits, const Tensor& logits, const Tensor& lse,
                                 const Tensor& targets, float) {
  const KernelChecker ck("cross_entropy_backward", device);
  const DType dt = ck.precision({&dlogits, &logits, &lse, &targets});
  const MatrixShape m = ck.matrix(logits, dt, "logits");
  const std::string per_row = "one per row of logits " + logits.str();
  ck.matrix_shape(dlogits, dt, m.rows, m.cols, "dlogits", "the shape of logits " + logits.str());
  ck.numel(targets, DType::i32, m.rows, "targets", per_row);
  ck.numel(lse, DType::f32, m.rows, "lse", per_row);
  if (dlogits.data() != logits.data()) ck.disjoint(dlogits, logits, "dlogits", "logits");  // in place is allowed
  ck.disjoint(dlogits, lse, "dlogits", "lse");
  return {dt, m.rows, m.cols, 0};
}

RowsShape embedding_forward(Device device, const Tensor& out, const Tensor& ids, const Tensor& table, bool) {
  const KernelChecker ck("embedding_forward", device);
  const DType dt = ck.precision({&out, &ids, &table});
  const MatrixShape tm = ck.matrix(table, dt, "table");
  ck.matrix_shape(out, dt, ids.numel(), tm.cols, "out", "one row of table " + table.str() + " per id in " + ids.str());
  ck.disjoint(out, table, "out", "table");
  return {dt, ids.numel(), tm.cols, tm.rows};
}

RowsShape embedding_backward(Device device, const Tensor& dtable, const Tensor& ids, const Tensor& dout) {
  const KernelChecker ck("embedding_backward", device);
  const DType dt = ck.precision({&dtable, &ids, &dout});
  const MatrixShape tm = ck.matrix(dtable, DType::f32, "dtable");
  ck.matrix_shape(dout, dt, ids.numel(), tm.cols, "dout",
                  "one row of dtable " + dtable.str() + " per id in " + ids.str());
  ck.disjoint(dtable, dout, "dtable", "dout");
  return {dt, ids.numel(), tm.cols, tm.rows};
}

ElementsShape add(Device device, const Tensor& out, const Tensor& a, const Tensor& b) {
  const KernelChecker ck("add", device);
  return same_numel(ck, ck.precision({&out, &a, &b}), a, "a", {{&b, "b"}, {&out, "out"}});
}

ElementsShape axpby(Device device, const Tensor& y, const Tensor& x, float, float) {
  const KernelChecker ck("axpby", device);
  return same_numel(ck, ck.precision({&y, &x}), x, "x", {{&y, "y"}});
}

ElementsShape fill(Device device, const Tensor& t, float) {
  const KernelChecker ck("fill", device);
  ck.precision({&t});
  if (!float_dtype(t.dtype()) && t.dtype() != DType::f64) ck.fail(describe("t", t) + " must be f32, f64, bf16 or f16");
  return {t.dtype(), t.numel()};
}

ElementsShape convert(Device device, const Tensor& out, const Tensor& in) {
  const KernelChecker ck("convert", device);
  ck.precision({&out, &in});
  if (!float_dtype(in.dtype()) || !float_dtype(out.dtype()))
    ck.fail("converts among f32, bf16 and f16; got in " + in.str() + " and out " + out.str());
  if (out.numel() != in.numel())
    ck.fail(describe("out", out) + " has " + std::to_string(out.numel()) + " elements but in " + in.str() + " has " +
            std::to_string(in.numel()));
  if (out.dtype() != in.dtype()) ck.disjoint(out, in, "out", "in");
  return {in.dtype(), in.numel()};
}

ElementsShape sum_squares(Device device, const Tensor& x) { return reduction("sum_squares", device, x); }

ElementsShape sum(Device device, const Tensor& x) { return reduction("sum", device, x); }

ElementsShape adamw_update(Device device, const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                           const AdamWParams& p) {
  const KernelChecker ck("adamw_update", device);
  const ElementsShape s =
      same_numel(ck, ck.precision({&param, &grad, &m, &v}), param, "param", {{&grad, "grad"}, {&m, "m"}, {&v, "v"}});
  if (p.step < 1) ck.fail("step must be >= 1 (1-based), got " + std::to_string(p.step));
  if (!(p.beta1 >= 0.0f && p.beta1 < 1.0f) || !(p.beta2 >= 0.0f && p.beta2 < 1.0f))
    ck.fail("betas must be in [0, 1), got (" + std::to_string(p.beta1) + ", " + std::to_string(p.beta2) + ")");
  ck.disjoint(param, grad, "param", "grad");
  ck.disjoint(param, m, "param", "m");
  ck.disjoint(param, v, "param", "v");
  ck.disjoint(m, v, "m", "v");
  return s;
}

}  // namespace kernel_check
}  // namespace neox
