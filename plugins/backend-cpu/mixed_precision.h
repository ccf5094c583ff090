// SPDX-License-Identifier: Apache-2.0
// bf16 and f16 activations for the cpu backend's f32 kernels.
//
// kernels.h ("Precision") asks every backend to accept f32, bf16 and f16
// activations. The kernels of this folder compute in f32 (and double), so one
// generic adapter serves every op, with no per-op code:
//   * each Tensor argument in bf16 or f16 is converted (exactly) into an f32
//     temporary in host memory, outputs and in-out tensors from their current
//     contents, so that accumulating ops (beta = 1, dweight +=) see what the
//     caller's tensor held;
//   * the op's f32 kernel runs on the temporaries;
//   * every non-const Tensor& argument that was converted is converted back,
//     rounding to nearest even: results are rounded once, when written.
// Tensors whose memory overlaps are converted together into one temporary
// and passed as views of it at the same relative offsets, so the kernel sees
// the same aliasing as the caller made (an in-place gelu still runs in place;
// a forbidden overlap is still refused by the kernel's own check, with its
// argument names).
//
// Which dtype each argument may have is the op's business, not the kernel's:
// a table of roles (below, one entry per Tensor argument, checked against
// the op's signature at compile time) says it, and the adapter validates a
// call that has any bf16 or f16 tensor before converting anything. A call in
// which every tensor is f32 goes straight to the kernel: no check beyond a
// dtype scan, no conversion, no allocation.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "neox/tensor.h"

namespace neox::cpu {

// The role of one Tensor argument of an op (kernels.h, "Precision").
enum class Role : std::uint8_t {
  activation,  // the compute dtype (f32, bf16 or f16), shared by all activations of a call;
               // includes the parameters a forward reads (weights, biases, tables)
  product,     // matmul's c: the compute dtype, or f32 (a weight gradient)
  f32,         // always f32: parameter gradients, per-row statistics, optimizer state
  index,       // i32 ids and targets (checked by the kernel)
  native,      // any float dtype, handled by the kernel itself (fill, convert, sum, sum_squares)
};

struct TensorRole {
  const char* name;  // the argument's name in kernels.h, for messages
  Role role;
};

template <std::size_t N>
using Roles = std::array<TensorRole, N>;

// One entry per op of NEOX_KERNEL_OPS, its Tensor arguments in order.
namespace roles {
constexpr Role A = Role::activation, F = Role::f32, I = Role::index, X = Role::native;
inline constexpr Roles<3> matmul{{{"c", Role::product}, {"a", A}, {"b", A}}};
inline constexpr Roles<2> add_bias{{{"out", A}, {"bias", A}}};
inline constexpr Roles<2> bias_backward{{{"dbias", F}, {"dout", A}}};
inline constexpr Roles<6> layernorm_forward{
    {{"out", A}, {"mean", F}, {"rstd", F}, {"inp", A}, {"weight", A}, {"bias", A}}};
inline constexpr Roles<8> layernorm_backward{{{"dinp", A},
                                              {"dweight", F},
                                              {"dbias", F},
                                              {"dout", A},
                                              {"inp", A},
                                              {"weight", A},
                                              {"mean", F},
                                              {"rstd", F}}};
inline constexpr Roles<2> gelu_forward{{{"out", A}, {"inp", A}}};
inline constexpr Roles<3> gelu_backward{{{"dinp", A}, {"inp", A}, {"dout", A}}};
inline constexpr Roles<1> rotary_forward{{{"qkv", A}}};
inline constexpr Roles<1> rotary_backward{{{"dqkv", A}}};
inline constexpr Roles<3> attention_forward{{{"out", A}, {"lse", F}, {"qkv", A}}};
inline constexpr Roles<5> attention_backward{
    {{"dqkv", A}, {"dout", A}, {"qkv", A}, {"out", A}, {"lse", F}}};
inline constexpr Roles<4> attention_decode{{{"out", A}, {"k_cache", A}, {"v_cache", A}, {"qkv", A}}};
inline constexpr Roles<4> cross_entropy_forward{{{"losses", F}, {"lse", F}, {"logits", A}, {"targets", I}}};
inline constexpr Roles<4> cross_entropy_backward{{{"dlogits", A}, {"logits", A}, {"lse", F}, {"targets", I}}};
inline constexpr Roles<3> embedding_forward{{{"out", A}, {"ids", I}, {"table", A}}};
inline constexpr Roles<3> embedding_backward{{{"dtable", F}, {"ids", I}, {"dout", A}}};
inline constexpr Roles<3> add{{{"out", A}, {"a", A}, {"b", A}}};
inline constexpr Roles<2> axpby{{{"y", A}, {"x", A}}};
inline constexpr Roles<1> fill{{{"t", X}}};
inline constexpr Roles<2> convert{{{"out", X}, {"in", X}}};
inline constexpr Roles<1> sum_squares{{{"x", X}}};
inline constexpr Roles<1> sum{{{"x", X}}};
inline constexpr Roles<4> adamw_update{{{"param", F}, {"grad", F}, {"m", F}, {"v", F}}};
}  // namespace roles

// One Tensor argument of a call.
struct TensorArg {
  const Tensor* tensor;
  bool output;  // passed as Tensor& (written or accumulated), not const Tensor&
  TensorRole role;
};

// True when some argument of a role the adapter handles is bf16 or f16.
bool needs_f32_staging(std::span<const TensorArg> args);

// Validates the dtypes of a call against the roles (throws neox::Error
// naming the op and the argument), then sets subs[i] to args[i] itself or
// to its f32 temporary. finish() converts the staged outputs back; it is
// not called when the kernel throws, which leaves the outputs as they were.
class F32Staging {
 public:
  F32Staging(const char* op, std::span<const TensorArg> args, std::span<Tensor> subs);
  void finish();

 private:
  std::vector<std::pair<Tensor, Tensor>> outputs_;  // (caller's tensor, f32 temporary view)
};

// ------------------------------------------------------------ the call adapter

template <typename A>
inline constexpr bool is_tensor_arg = std::is_same_v<std::remove_cvref_t<A>, Tensor>;

template <typename... Args>
constexpr std::size_t count_tensor_args() {
  return (std::size_t{0} + ... + (is_tensor_arg<Args> ? std::size_t{1} : std::size_t{0}));
}

// For each argument position, its index among the Tensor arguments (-1: not a tensor).
template <typename... Args>
constexpr std::array<int, sizeof...(Args)> tensor_slots() {
  std::array<int, sizeof...(Args)> slot{};
  int n = 0;
  std::size_t i = 0;
  ((slot[i++] = is_tensor_arg<Args> ? n++ : -1), ...);
  return slot;
}

// Argument I of the call: the substitute for a Tensor argument, else the argument itself.
template <std::size_t I, typename... Args, typename Tuple, std::size_t N>
decltype(auto) staged_arg(Tuple& args, std::array<Tensor, N>& subs) {
  using A = std::tuple_element_t<I, std::tuple<Args...>>;
  if constexpr (is_tensor_arg<A>) {
    constexpr auto slots = tensor_slots<Args...>();
    return static_cast<A>(subs[static_cast<std::size_t>(slots[I])]);
  } else {
    return static_cast<A>(std::get<I>(args));
  }
}

// Calls fn(args...), through f32 temporaries when a tensor is bf16 or f16.
template <typename R, typename... Args, std::size_t N>
R call_mixed_precision(const char* op, R (*fn)(Args...), const Roles<N>& roles, Args... args) {
  static_assert(N == count_tensor_args<Args...>(),
                "the role table of an op must have one entry per Tensor argument");
  if constexpr (N == 0) {
    return fn(std::forward<Args>(args)...);
  } else {
    std::array<TensorArg, N> list;
    std::size_t k = 0;
    (
        [&] {
          if constexpr (is_tensor_arg<Args>) {
            list[k] = TensorArg{&args, std::is_same_v<Args, Tensor&>, roles[k]};
            ++k;
          }
        }(),
        ...);
    if (!needs_f32_staging(list)) return fn(std::forward<Args>(args)...);  // the f32 path

    std::array<Tensor, N> subs;
    F32Staging staging(op, list, subs);
    auto tuple = std::forward_as_tuple(args...);
    auto call = [&]<std::size_t... I>(std::index_sequence<I...>) -> R {
      return fn(staged_arg<I, Args...>(tuple, subs)...);
    };
    if constexpr (std::is_void_v<R>) {
      call(std::index_sequence_for<Args...>{});
      staging.finish();
    } else {
      R result = call(std::index_sequence_for<Args...>{});
      staging.finish();
      return result;
    }
  }
}

}  // namespace neox::cpu
