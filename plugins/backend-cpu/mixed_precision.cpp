// SPDX-License-Identifier: Apache-2.0
#include "mixed_precision.h"

#include <algorithm>
#include <cstdint>
#include <string>

#include "check.h"
#include "ops.h"

namespace neox::cpu {
namespace {

bool low_precision(DType t) { return t == DType::bf16 || t == DType::f16; }
bool compute_dtype(DType t) { return t == DType::f32 || low_precision(t); }
bool staged_role(Role r) { return r == Role::activation || r == Role::product; }

std::string describe(const TensorArg& a) { return std::string(a.role.name) + " " + a.tensor->str(); }

// The dtype rules of kernels.h ("Precision") for a call that has a bf16 or
// f16 tensor. Undefined tensors and tensors of other roles are left to the
// kernel's own checks.
void validate(const char* op, std::span<const TensorArg> args) {
  const TensorArg* lead = nullptr;  // the first activation: it sets the compute dtype
  for (const auto& a : args)
    if (a.role.role == Role::activation && a.tensor->defined()) {
      lead = &a;
      break;
    }
  if (lead && !compute_dtype(lead->tensor->dtype()))
    fail(op, describe(*lead) + " must be f32, bf16 or f16");
  const DType compute = lead ? lead->tensor->dtype() : DType::f32;
  const std::string dt(dtype_name(compute));
  for (const auto& a : args) {
    if (!a.tensor->defined()) continue;
    const DType t = a.tensor->dtype();
    switch (a.role.role) {
      case Role::activation:
        if (t != compute)
          fail(op, describe(a) + " must be " + dt + " like " + describe(*lead) +
                       " (the activations and weights of one call share one dtype: f32, bf16 or f16)");
        break;
      case Role::product:
        if (t != compute && t != DType::f32)
          fail(op, describe(a) + " must be " + dt + " like " + describe(*lead) + ", or f32 (a weight gradient)");
        break;
      case Role::f32:
        if (t != DType::f32)
          fail(op, describe(a) + " must be f32 whatever the compute dtype" + (lead ? " (" + dt + ")" : std::string()) +
                       ": parameter gradients, per-row statistics and optimizer state are always f32");
        break;
      case Role::index:
      case Role::native:
        break;
    }
  }
}

}  // namespace

bool needs_f32_staging(std::span<const TensorArg> args) {
  for (const auto& a : args)
    if (a.role.role != Role::native && low_precision(a.tensor->dtype())) return true;
  return false;
}

F32Staging::F32Staging(const char* op, std::span<const TensorArg> args, std::span<Tensor> subs) {
  validate(op, args);
  // The tensors to convert, by address: overlapping ones form one group
  // with one temporary, so their aliasing survives the conversion.
  std::vector<std::size_t> staged;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const Tensor& t = *args[i].tensor;
    subs[i] = t;
    if (!staged_role(args[i].role.role) || !low_precision(t.dtype())) continue;
    require(t, t.dtype(), op, args[i].role.name);  // defined, in host memory
    if (t.numel() == 0)
      subs[i] = Tensor::empty(nullptr, t.shape(), DType::f32);
    else
      staged.push_back(i);
  }
  auto begin = [&](std::size_t i) { return reinterpret_cast<std::uintptr_t>(args[i].tensor->data()); };
  auto end = [&](std::size_t i) { return begin(i) + args[i].tensor->bytes(); };
  std::sort(staged.begin(), staged.end(), [&](std::size_t x, std::size_t y) { return begin(x) < begin(y); });
  for (std::size_t g = 0; g < staged.size();) {
    // [lo, hi): the union of the group's byte ranges (contiguous: members overlap)
    std::size_t last = g + 1;
    std::uintptr_t lo = begin(staged[g]), hi = end(staged[g]);
    while (last < staged.size() && begin(staged[last]) < hi) hi = std::max(hi, end(staged[last++]));
    const DType dtype = args[staged[g]].tensor->dtype();  // validate(): all staged tensors share it
    for (std::size_t j = g; j < last; ++j)
      if ((begin(staged[j]) - lo) % dtype_size(dtype) != 0)
        fail(op, describe(args[staged[j]]) + " overlaps " + describe(args[staged[g]]) +
                     " at an offset that is not a whole number of elements");
    const auto count = static_cast<std::int64_t>((hi - lo) / dtype_size(dtype));
    Tensor temp = Tensor::empty(nullptr, {count}, DType::f32);
    const Tensor source = Tensor::wrap(reinterpret_cast<void*>(lo), {count}, dtype);
    convert(temp, source);
    for (std::size_t j = g; j < last; ++j) {
      const std::size_t i = staged[j];
      const Tensor& t = *args[i].tensor;
      const auto offset = static_cast<std::int64_t>((begin(i) - lo) / dtype_size(dtype));
      subs[i] = temp.slice(offset, t.numel()).view(t.shape());
      if (args[i].output) outputs_.emplace_back(Tensor::wrap(t.data(), {t.numel()}, dtype), subs[i]);
    }
    g = last;
  }
}

void F32Staging::finish() {
  for (auto& [target, temp] : outputs_) convert(target, temp);
}

}  // namespace neox::cpu
