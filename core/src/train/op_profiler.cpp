// SPDX-License-Identifier: Apache-2.0
#include "neox/train/op_profiler.h"

#include <algorithm>
#include <chrono>
#include <functional>
#include <string>
#include <type_traits>
#include <utility>

#include "neox/kernel_contract.h"
#include "neox/tensor.h"

namespace neox {
namespace {

std::string describe(const Tensor& t) {
  std::string s(dtype_name(t.dtype()));
  s += '[';
  for (int i = 0; i < t.ndim(); ++i) s += (i ? "," : "") + std::to_string(t.shape()[static_cast<std::size_t>(i)]);
  return s + ']';
}

// dtype[shape] of each defined tensor argument, in order.
template <typename... Args>
std::string shapes_of(const Args&... args) {
  std::string s;
  auto add = [&](const auto& a) {
    if constexpr (std::is_same_v<std::decay_t<decltype(a)>, Tensor>)
      if (a.defined() || a.numel() != 0) s += (s.empty() ? "" : " ") + describe(a);
  };
  (add(args), ...);
  return s;
}

using Clock = std::chrono::steady_clock;

// The op's floor (bytes, flops) comes from the SDK's table (neox/kernel_contract.h),
// which `neox bench op` reads too.
template <typename R, typename... Args>
void wrap(std::function<R(Args...)>& fn, const char* op, OpProfiler* profiler) {
  if (!fn) return;
  const KernelOpInfo& info = kernel_op_info(op);
  fn = [inner = fn, op, &info, profiler](Args... args) -> R {
    const KernelCall call(args...);
    const double bytes = info.bytes(call);
    const double flops = info.flops ? info.flops(call) : 0.0;
    const std::string shapes = shapes_of(args...);
    Backend& b = profiler->backend();
    b.synchronize();
    const auto t0 = Clock::now();
    auto finish = [&] {
      b.synchronize();
      profiler->record(op, shapes, std::chrono::duration<double>(Clock::now() - t0).count(), bytes, flops);
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
