// SPDX-License-Identifier: Apache-2.0
// The contract of neox/kernels.h as data and as checks, for the backends and
// kernels plugins that implement the ops and for the tools that measure them.
//
//  * kernel_args::<op>: the op's Tensor arguments in order, each with its
//    dtype role (kernels.h, "Precision") and whether the op reads or writes
//    it. Checked against the Kernels signatures at compile time (below).
//  * kernel_op_info(op): that list with the op's floating-point operations
//    and the bytes one call moves; `neox bench op` and the op profiler
//    (`neox bench train --profile`) read them here.
//  * kernel_check::<op>(device, the op's arguments...): validates a call as
//    every backend must (device, the precision contract, shapes, aliasing)
//    and returns the compute dtype and the sizes the kernel needs. A failure
//    throws neox::Error "<op>: <argument> <tensor> <what is wrong>", the same
//    text whichever backend or plugin runs the op. A kernels plugin calls the
//    function of each op it implements first thing, e.g.
//        const neox::ElementsShape s = neox::kernel_check::gelu_forward(device, out, inp);
//    KernelChecker holds the pieces, for the checks an implementation adds
//    (its own limits, the values of ids and targets).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

#include "neox/dtype.h"
#include "neox/export.h"
#include "neox/kernels.h"
#include "neox/tensor.h"

namespace neox {

// ---------------------------------------------------------------- the op table

// The dtype a Tensor argument may have (kernels.h, "Precision").
enum class ArgRole : std::uint8_t {
  activation,  // the call's compute dtype, f32, bf16 or f16, shared by every activation of the call;
               // includes the parameters a forward reads (weights, biases, embedding tables)
  product,     // matmul's c: the compute dtype, or f32 (a weight gradient)
  f32,         // f32 always: parameter gradients, per-row statistics, optimizer state
  index,       // i32: token ids and targets
  native,      // any float dtype the op lists, handled by the op itself (fill, convert, sum, sum_squares)
};

// What the op does with a Tensor argument.
enum class ArgAccess : std::uint8_t {
  read,        // a const Tensor&
  write,       // overwritten; what it held is ignored
  read_write,  // read and written: accumulated into or updated in place. matmul's c and axpby's y are
               // read only when beta != 0, embedding_forward's out only when it accumulates
};

struct KernelArg {
  const char* name;  // as in kernels.h; messages name the argument by it
  ArgRole role;
  ArgAccess access;
};

// One list per op of NEOX_KERNEL_OPS, named after the op: its Tensor
// arguments in the order of the Kernels member's signature.
namespace kernel_args {
inline constexpr KernelArg matmul[] = {{"c", ArgRole::product, ArgAccess::read_write},
                                       {"a", ArgRole::activation, ArgAccess::read},
                                       {"b", ArgRole::activation, ArgAccess::read}};
inline constexpr KernelArg add_bias[] = {{"out", ArgRole::activation, ArgAccess::read_write},
                                         {"bias", ArgRole::activation, ArgAccess::read}};
inline constexpr KernelArg bias_backward[] = {{"dbias", ArgRole::f32, ArgAccess::read_write},
                                              {"dout", ArgRole::activation, ArgAccess::read}};
inline constexpr KernelArg layernorm_forward[] = {
    {"out", ArgRole::activation, ArgAccess::write},   {"mean", ArgRole::f32, ArgAccess::write},
    {"rstd", ArgRole::f32, ArgAccess::write},         {"inp", ArgRole::activation, ArgAccess::read},
    {"weight", ArgRole::activation, ArgAccess::read}, {"bias", ArgRole::activation, ArgAccess::read}};
inline constexpr KernelArg layernorm_backward[] = {{"dinp", ArgRole::activation, ArgAccess::read_write},
                                                   {"dweight", ArgRole::f32, ArgAccess::read_write},
                                                   {"dbias", ArgRole::f32, ArgAccess::read_write},
                                                   {"dout", ArgRole::activation, ArgAccess::read},
                                                   {"inp", ArgRole::activation, ArgAccess::read},
                                                   {"weight", ArgRole::activation, ArgAccess::read},
                                                   {"mean", ArgRole::f32, ArgAccess::read},
                                                   {"rstd", ArgRole::f32, ArgAccess::read}};
inline constexpr KernelArg gelu_forward[] = {{"out", ArgRole::activation, ArgAccess::write},
                                             {"inp", ArgRole::activation, ArgAccess::read}};
inline constexpr KernelArg gelu_backward[] = {{"dinp", ArgRole::activation, ArgAccess::write},
                                              {"inp", ArgRole::activation, ArgAccess::read},
                                              {"dout", ArgRole::activation, ArgAccess::read}};
inline constexpr KernelArg rotary_forward[] = {{"qkv", ArgRole::activation, ArgAccess::read_write}};
inline constexpr KernelArg rotary_backward[] = {{"dqkv", ArgRole::activation, ArgAccess::read_write}};
inline constexpr KernelArg attention_forward[] = {{"out", ArgRole::activation, ArgAccess::write},
                                                  {"lse", ArgRole::f32, ArgAccess::write},
                                                  {"qkv", ArgRole::activation, ArgAccess::read}};
inline constexpr KernelArg attention_backward[] = {{"dqkv", ArgRole::activation, ArgAccess::write},
                                                   {"dout", ArgRole::activation, ArgAccess::read},
                                                   {"qkv", ArgRole::activation, ArgAccess::read},
                                                   {"out", ArgRole::activation, ArgAccess::read},
                                                   {"lse", ArgRole::f32, ArgAccess::read}};
inline constexpr KernelArg attention_decode[] = {{"out", ArgRole::activation, ArgAccess::write},
                                                 {"k_cache", ArgRole::activation, ArgAccess::read_write},
                                                 {"v_cache", ArgRole::activation, ArgAccess::read_write},
                                                 {"qkv", ArgRole::activation, ArgAccess::read}};
inline constexpr KernelArg cross_entropy_forward[] = {{"losses", ArgRole::f32, ArgAccess::write},
                                                      {"lse", ArgRole::f32, ArgAccess::write},
                                                      {"logits", ArgRole::activation, ArgAccess::read},
                                                      {"targets", ArgRole::index, ArgAccess::read}};
inline constexpr KernelArg cross_entropy_backward[] = {{"dlogits", ArgRole::activation, ArgAccess::write},
                                                       {"logits", ArgRole::activation, ArgAccess::read},
                                                       {"lse", ArgRole::f32, ArgAccess::read},
                                                       {"targets", ArgRole::index, ArgAccess::read}};
inline constexpr KernelArg embedding_forward[] = {{"out", ArgRole::activation, ArgAccess::read_write},
                                                  {"ids", ArgRole::index, ArgAccess::read},
                                                  {"table", ArgRole::activation, ArgAccess::read}};
inline constexpr KernelArg embedding_backward[] = {{"dtable", ArgRole::f32, ArgAccess::read_write},
                                                   {"ids", ArgRole::index, ArgAccess::read},
                                                   {"dout", ArgRole::activation, ArgAccess::read}};
inline constexpr KernelArg add[] = {{"out", ArgRole::activation, ArgAccess::write},
                                    {"a", ArgRole::activation, ArgAccess::read},
                                    {"b", ArgRole::activation, ArgAccess::read}};
inline constexpr KernelArg axpby[] = {{"y", ArgRole::activation, ArgAccess::read_write},
                                      {"x", ArgRole::activation, ArgAccess::read}};
inline constexpr KernelArg fill[] = {{"t", ArgRole::native, ArgAccess::write}};
inline constexpr KernelArg convert[] = {{"out", ArgRole::native, ArgAccess::write},
                                        {"in", ArgRole::native, ArgAccess::read}};
inline constexpr KernelArg sum_squares[] = {{"x", ArgRole::native, ArgAccess::read}};
inline constexpr KernelArg sum[] = {{"x", ArgRole::native, ArgAccess::read}};
inline constexpr KernelArg adamw_update[] = {{"param", ArgRole::f32, ArgAccess::read_write},
                                             {"grad", ArgRole::f32, ArgAccess::read},
                                             {"m", ArgRole::f32, ArgAccess::read_write},
                                             {"v", ArgRole::f32, ArgAccess::read_write}};
}  // namespace kernel_args

namespace detail {
template <typename F>
struct KernelSignature;
template <typename R, typename... Args>
struct KernelSignature<std::function<R(Args...)>> {
  // True when `args` has one entry per Tensor argument, and an entry is
  // `read` exactly when its argument is a const Tensor&.
  template <std::size_t N>
  static constexpr bool matches(const KernelArg (&args)[N]) {
    std::size_t i = 0;
    bool ok = true;
    (
        [&] {
          if constexpr (std::is_same_v<std::remove_cvref_t<Args>, Tensor>) {
            constexpr bool is_const = std::is_const_v<std::remove_reference_t<Args>>;
            ok = ok && i < N && (args[i].access == ArgAccess::read) == is_const;
            ++i;
          }
        }(),
        ...);
    return ok && i == N;
  }
};
}  // namespace detail

// Every op has its list, and the list fits the op's signature.
#define NEOX_KERNEL_ARGS_MATCH(name)                                                          \
  static_assert(detail::KernelSignature<decltype(Kernels::name)>::matches(kernel_args::name), \
                "kernel_args::" #name " must list the Tensor arguments of Kernels::" #name    \
                " in order, the const ones as read");
NEOX_KERNEL_OPS(NEOX_KERNEL_ARGS_MATCH)
#undef NEOX_KERNEL_ARGS_MATCH

// The arguments of one call, as the op's flops and bytes read them: the
// Tensor arguments in order, and the bool, int, int64 and float arguments in
// order as doubles (AdamWParams is not kept), e.g. KernelCall(c, a, b,
// trans_a, trans_b, alpha, beta). It points at the call's tensors: use it
// while they live.
class KernelCall {
 public:
  static constexpr std::size_t kMaxTensors = 8, kMaxScalars = 4;

  KernelCall() = default;
  template <typename... Args>
  explicit KernelCall(const Args&... args) {
    static_assert((std::size_t{0} + ... + (std::is_same_v<Args, Tensor> ? 1u : 0u)) <= kMaxTensors);
    static_assert((std::size_t{0} + ... + (std::is_arithmetic_v<Args> ? 1u : 0u)) <= kMaxScalars);
    (add(args), ...);
  }

  std::span<const Tensor* const> tensors() const { return {tensors_, tensor_count_}; }
  std::span<const double> scalars() const { return {scalars_, scalar_count_}; }

 private:
  template <typename A>
  void add(const A& a) {
    if constexpr (std::is_same_v<A, Tensor>) {
      tensors_[tensor_count_++] = &a;
    } else if constexpr (std::is_arithmetic_v<A>) {
      scalars_[scalar_count_++] = static_cast<double>(a);
    }
  }

  const Tensor* tensors_[kMaxTensors] = {};
  double scalars_[kMaxScalars] = {};
  std::size_t tensor_count_ = 0, scalar_count_ = 0;
};

struct KernelOpInfo {
  std::string_view name;            // as in NEOX_KERNEL_OPS
  std::span<const KernelArg> args;  // kernel_args::<name>
  // Floating-point operations of one call, for the ops whose time they bound
  // (matmul 2MNK; attention_forward 2 B T^2 C and attention_backward
  // 5 B T^2 C, the causal half of the square); null for the others.
  double (*flops)(const KernelCall& call);
  // Bytes one call reads and writes: each tensor once per read and once per
  // write by its access (read_write: twice; matmul's c and axpby's y once when
  // beta = 0). Where the op touches part of a tensor, that part:
  // embedding_forward reads the rows ids name, not the table (and out when it
  // accumulates), embedding_backward reads and writes those rows of dtable,
  // attention_decode reads the caches' positions up to position_offset + Tq
  // and writes Tq of them. A floor for the op's time on a device's memory.
  // Both give 0 for a call whose arguments are not the op's.
  double (*bytes)(const KernelCall& call);
};

// The op named `op`; throws neox::Error for an unknown name, listing the ops.
NEOX_API const KernelOpInfo& kernel_op_info(std::string_view op);
// Every op, in the order of NEOX_KERNEL_OPS.
NEOX_API std::span<const KernelOpInfo> kernel_op_infos();

// ---------------------------------------------------------------- the checks

// A tensor used as a matrix: [prod(leading dims), last dim].
struct MatrixShape {
  std::int64_t rows = 0, cols = 0;
};

// A qkv tensor [B, T, 3*C] of n_head heads of hs = C / n_head.
struct QkvShape {
  DType dtype = DType::f32;  // the compute dtype
  std::int64_t B = 0, T = 0, C = 0, n_head = 0, hs = 0;
  std::int64_t max_T = 0;  // attention_decode: the caches' positions
};

// What the checks of the other ops return.
struct MatmulShape {
  DType dtype = DType::f32;    // of a and b: the compute dtype
  DType c_dtype = DType::f32;  // the compute dtype or f32
  std::int64_t M = 0, N = 0, K = 0;
  MatrixShape a, b;  // as stored: a.cols and b.cols are the row strides
};
struct RowsShape {
  DType dtype = DType::f32;         // the compute dtype
  std::int64_t rows = 0, cols = 0;  // [N, C] (cross-entropy: [N, V]; embedding: [ids, C])
  std::int64_t table_rows = 0;      // embedding: the rows of the table (V)
};
struct ElementsShape {
  DType dtype = DType::f32;  // the compute dtype (fill, sum, sum_squares: x's or t's; convert: in's)
  std::int64_t n = 0;        // elements
};

// The checks of one call of one op on a backend's device. Every failure
// throws neox::Error "<op>: <message>".
class NEOX_API KernelChecker {
 public:
  // op: the name in NEOX_KERNEL_OPS; device: the backend's (messages for the
  // cpu device speak of host memory).
  KernelChecker(const char* op, Device device) : op_(op), device_(device) {}
  const char* op() const { return op_; }
  Device device() const { return device_; }

  [[noreturn]] void fail(const std::string& message) const;

  // The precision contract: `tensors` are the op's Tensor arguments in the
  // order of kernel_args::<op>. Each must be defined and on the device; the
  // activations share one dtype, f32, bf16 or f16 (the first sets it), the
  // product has it or is f32, the f32 ones are f32, the index ones i32 (native
  // ones are the op's to check). Returns the compute dtype (f32 when the op
  // has no activation).
  DType precision(std::span<const Tensor* const> tensors) const;
  DType precision(std::initializer_list<const Tensor*> tensors) const {
    return precision(std::span<const Tensor* const>(tensors.begin(), tensors.size()));
  }

  // t is defined and on the device.
  void on_device(const Tensor& t, const char* what) const;
  // As on_device(), and of `dtype`.
  void require(const Tensor& t, DType dtype, const char* what) const;
  // As require(), then t as a matrix (rank >= 1).
  MatrixShape matrix(const Tensor& t, DType dtype, const char* what) const;
  // As require(), and n elements; `expected` says where n comes from.
  void numel(const Tensor& t, DType dtype, std::int64_t n, const char* what, const std::string& expected) const;
  // As matrix(), and exactly [rows, cols].
  void matrix_shape(const Tensor& t, DType dtype, std::int64_t rows, std::int64_t cols, const char* what,
                    const std::string& expected) const;
  // The memory of a and b does not overlap (for outputs that must not alias inputs).
  void disjoint(const Tensor& a, const Tensor& b, const char* what_a, const char* what_b) const;
  // As require(), and [B, T, 3*C] with C > 0 divisible by n_head > 0.
  QkvShape qkv(const Tensor& qkv, DType dtype, int n_head, const char* what) const;

  // The messages of the checks of values, which a backend makes where its data is.
  [[noreturn]] void target_out_of_range(std::int64_t row, std::int64_t target, std::int64_t V) const;
  [[noreturn]] void id_out_of_range(const Tensor& ids, std::int64_t position, std::int64_t id,
                                    std::int64_t table_rows) const;

 private:
  const char* op_;
  Device device_;
};

// The checks of each op (kernels.h states the contracts): the backend's device,
// then the op's arguments. The values of ids and targets are not read here
// (they may be on a device): a backend checks them, with the messages of
// KernelChecker. Implementations add their own limits after these.
namespace kernel_check {
NEOX_API MatmulShape matmul(Device device, const Tensor& c, const Tensor& a, const Tensor& b, bool trans_a,
                            bool trans_b, float alpha, float beta);
NEOX_API RowsShape add_bias(Device device, const Tensor& out, const Tensor& bias);
NEOX_API RowsShape bias_backward(Device device, const Tensor& dbias, const Tensor& dout);
// Also eps >= 0 and C > 0.
NEOX_API RowsShape layernorm_forward(Device device, const Tensor& out, const Tensor& mean, const Tensor& rstd,
                                     const Tensor& inp, const Tensor& weight, const Tensor& bias, float eps);
NEOX_API RowsShape layernorm_backward(Device device, const Tensor& dinp, const Tensor& dweight, const Tensor& dbias,
                                      const Tensor& dout, const Tensor& inp, const Tensor& weight, const Tensor& mean,
                                      const Tensor& rstd);
NEOX_API ElementsShape gelu_forward(Device device, const Tensor& out, const Tensor& inp);
NEOX_API ElementsShape gelu_backward(Device device, const Tensor& dinp, const Tensor& inp, const Tensor& dout);
// Also rotary_dims even in [0, hs], base > 0 and finite, position_offset >= 0.
NEOX_API QkvShape rotary_forward(Device device, const Tensor& qkv, int n_head, int rotary_dims, float base,
                                 std::int64_t position_offset);
NEOX_API QkvShape rotary_backward(Device device, const Tensor& dqkv, int n_head, int rotary_dims, float base,
                                  std::int64_t position_offset);
NEOX_API QkvShape attention_forward(Device device, const Tensor& out, const Tensor& lse, const Tensor& qkv, int n_head);
NEOX_API QkvShape attention_backward(Device device, const Tensor& dqkv, const Tensor& dout, const Tensor& qkv,
                                     const Tensor& out, const Tensor& lse, int n_head);
// Also the positions [position_offset, position_offset + Tq) within the caches.
NEOX_API QkvShape attention_decode(Device device, const Tensor& out, const Tensor& k_cache, const Tensor& v_cache,
                                   const Tensor& qkv, int n_head, std::int64_t position_offset);
NEOX_API RowsShape cross_entropy_forward(Device device, const Tensor& losses, const Tensor& lse, const Tensor& logits,
                                         const Tensor& targets);
NEOX_API RowsShape cross_entropy_backward(Device device, const Tensor& dlogits, const Tensor& logits, const Tensor& lse,
                                          const Tensor& targets, float dloss);
NEOX_API RowsShape embedding_forward(Device device, const Tensor& out, const Tensor& ids, const Tensor& table,
                                     bool accumulate);
NEOX_API RowsShape embedding_backward(Device device, const Tensor& dtable, const Tensor& ids, const Tensor& dout);
NEOX_API ElementsShape add(Device device, const Tensor& out, const Tensor& a, const Tensor& b);
NEOX_API ElementsShape axpby(Device device, const Tensor& y, const Tensor& x, float alpha, float beta);
// t is f32, f64, bf16 or f16.
NEOX_API ElementsShape fill(Device device, const Tensor& t, float value);
// in and out are f32, bf16 or f16 with equal numel, and disjoint when their
// dtypes differ (a copy within one dtype is the backend's to do or refuse).
NEOX_API ElementsShape convert(Device device, const Tensor& out, const Tensor& in);
// x is f32, bf16 or f16.
NEOX_API ElementsShape sum_squares(Device device, const Tensor& x);
NEOX_API ElementsShape sum(Device device, const Tensor& x);
// Also step >= 1 and betas in [0, 1).
NEOX_API ElementsShape adamw_update(Device device, const Tensor& param, const Tensor& grad, const Tensor& m,
                                    const Tensor& v, const AdamWParams& p);
}  // namespace kernel_check

}  // namespace neox
