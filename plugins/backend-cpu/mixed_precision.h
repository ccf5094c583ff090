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
// the SDK's table of roles (neox/kernel_contract.h, kernel_args::<op>, one
// entry per Tensor argument, checked against the op's signature at compile
// time) says it, and the adapter validates a call that has any bf16 or f16
// tensor (KernelChecker::precision) before converting anything. A call in
// which every tensor is f32 goes straight to the kernel, whose checks
// (kernel_check::<op>) validate it: no conversion, no allocation.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "neox/kernel_contract.h"
#include "neox/tensor.h"

namespace neox::cpu {

// One Tensor argument of a call.
struct TensorArg {
  const Tensor* tensor;
  bool output;    // passed as Tensor& (written or accumulated), not const Tensor&
  KernelArg arg;  // its name and role (neox/kernel_contract.h)
};

// True when some argument of a role the adapter handles is bf16 or f16.
bool needs_f32_staging(std::span<const TensorArg> args);

// Validates the dtypes of a call against the roles (KernelChecker::precision
// throws neox::Error naming the op and the argument), then sets subs[i] to
// args[i] itself or to its f32 temporary. finish() converts the staged
// outputs back; it is not called when the kernel throws, which leaves the
// outputs as they were.
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
R call_mixed_precision(const char* op, R (*fn)(Args...), const KernelArg (&roles)[N], Args... args) {
  static_assert(N == count_tensor_args<Args...>(), "the role table of an op must have one entry per Tensor argument");
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
    auto call = [&]<std::size_t... I>(std::index_sequence<I...>)->R {
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
