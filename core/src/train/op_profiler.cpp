// SPDX-License-Identifier: Apache-2.0
#include "neox/train/op_profiler.h"

#include <algorithm>
#include <chrono>
#include <functional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "neox/tensor.h"

namespace neox {
namespace {

std::string describe(const Tensor& t) {
  std::string s(dtype_name(t.dtype()));
  s += '[';
  for (int i = 0; i < t.ndim(); ++i) s += (i ? "," : "") + std::to_string(t.shape()[static_cast<std::size_t>(i)]);
  return s + ']';
}

// The tensor arguments of one call: their description and bytes.
struct ArgSummary {
  std::string shapes;
  double bytes = 0;
  std::vector<const Tensor*> tensors;
};

template <typename A>
void summarise(ArgSummary& s, const A& a) {
  if constexpr (std::is_same_v<std::decay_t<A>, Tensor>) {
    if (!a.defined() && a.numel() == 0) return;
    s.shapes += (s.shapes.empty() ? "" : " ") + describe(a);
    s.bytes += static_cast<double>(a.bytes());
    s.tensors.push_back(&a);
  }
}

double dim(const Tensor* t, int i) { return static_cast<double>(t->shape()[static_cast<std::size_t>(i)]); }

// Floating-point operations of one call, where they dominate the op.
// `args` is the call's arguments as a tuple (for matmul's trans_a).
template <typename Tuple>
double op_flops(const char* op, const ArgSummary& s, const Tuple& args) {
  const std::string name = op;
  const auto& t = s.tensors;
  if constexpr (std::tuple_size_v<Tuple> >= 4) {
    using A3 = std::decay_t<std::tuple_element_t<3, Tuple>>;
    if constexpr (std::is_same_v<A3, bool>) {
      // matmul(c, a, b, trans_a, ...): K from a.
      if (name == "matmul" && t.size() == 3 && t[0]->ndim() == 2 && t[1]->ndim() == 2) {
        const double K = std::get<3>(args) ? dim(t[1], 0) : dim(t[1], 1);
        return 2.0 * dim(t[0], 0) * dim(t[0], 1) * K;
      }
    }
  }
  // Causal attention over qkv[B,T,3C]: QK^T and PV, half of the square.
  if (name == "attention_forward" && t.size() == 3 && t[2]->ndim() == 3) {
    const double B = dim(t[2], 0), T = dim(t[2], 1), C = dim(t[2], 2) / 3;
    return 2.0 * B * T * T * C;
  }
  // Backward: recompute QK^T, then dV, dP, dQ, dK: five products.
  if (name == "attention_backward" && t.size() >= 2 && t[1]->ndim() == 3) {
    const double B = dim(t[1], 0), T = dim(t[1], 1), C = dim(t[1], 2);
    return 5.0 * B * T * T * C;
  }
  return 0;
}

using Clock = std::chrono::steady_clock;

template <typename R, typename... Args>
void wrap(std::function<R(Args...)>& fn, const char* op, OpProfiler* profiler) {
  if (!fn) return;
  fn = [inner = fn, op, profiler](Args... args) -> R {
    ArgSummary s;
    (summarise(s, args), ...);
    const double flops = op_flops(op, s, std::forward_as_tuple(args...));
    Backend& b = profiler->backend();
    b.synchronize();
    const auto t0 = Clock::now();
    auto finish = [&] {
      b.synchronize();
      profiler->record(op, s.shapes, std::chrono::duration<double>(Clock::now() - t0).count(), s.bytes, flops);
    };
    if constexpr (std::is_void_v<R>) {
      inner(std::forward<Args>(args)...);
      finish();
    } else {
      R r = inner(std::forward<Args>(args)...);
      finish();
      return r;
    }
  };
}

}  // namespace

OpProfiler::OpProfiler(Backend& backend) : backend_(backend), saved_(backend.kernels) {
#define NEOX_WRAP(name) wrap(backend_.kernels.name, #name, this);
  NEOX_KERNEL_OPS(NEOX_WRAP)
#undef NEOX_WRAP
}

OpProfiler::~OpProfiler() { backend_.kernels = saved_; }

void OpProfiler::record(const char* op, const std::string& shapes, double seconds, double bytes, double flops) {
  Entry& e = entries_[{op, shapes}];
  if (e.calls == 0) {
    e.op = op;
    e.shapes = shapes;
    e.bytes = bytes;
    e.flops = flops;
  }
  ++e.calls;
  e.seconds += seconds;
}

std::vector<OpProfiler::Entry> OpProfiler::entries() const {
  std::vector<Entry> v;
  v.reserve(entries_.size());
  for (const auto& [key, e] : entries_) v.push_back(e);
  std::stable_sort(v.begin(), v.end(), [](const Entry& a, const Entry& b) { return a.seconds > b.seconds; });
  return v;
}

double OpProfiler::total_seconds() const {
  double t = 0;
  for (const auto& [key, e] : entries_) t += e.seconds;
  return t;
}

}  // namespace neox
