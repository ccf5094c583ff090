// SPDX-License-Identifier: Apache-2.0
#include "mixed_precision.h"

#include <algorithm>
#include <cstdint>
#include <string>

#include "neox/dtype.h"
#include "ops.h"

namespace neox::cpu {
namespace {

bool low_precision(DType t) { return t == DType::bf16 || t == DType::f16; }
bool staged_role(ArgRole r) { return r == ArgRole::activation || r == ArgRole::product; }

std::string describe(const TensorArg& a) { return std::string(a.arg.name) + " " + a.tensor->str(); }

}  // namespace

bool needs_f32_staging(std::span<const TensorArg> args) {
  for (const auto& a : args)
    if (a.arg.role != ArgRole::native && low_precision(a.tensor->dtype())) return true;
  return false;
}

F32Staging::F32Staging(const char* op, std::span<const TensorArg> args, std::span<Tensor> subs) {
  // The dtype rules of kernels.h ("Precision"), on the caller's tensors: every
  // one defined and in host memory, then one compute dtype, f32 roles, i32 ids.
  const KernelChecker ck(op, Device{});
  std::vector<const Tensor*> tensors;
  for (const auto& a : args) tensors.push_back(a.tensor);
  ck.precision(tensors);
  // The tensors to convert, by address: overlapping ones form one group
  // with one temporary, so their aliasing survives the conversion.
  std::vector<std::size_t> staged;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const Tensor& t = *args[i].tensor;
    subs[i] = t;
    if (!staged_role(args[i].arg.role) || !low_precision(t.dtype())) continue;
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
    const DType dtype = args[staged[g]].tensor->dtype();  // precision(): all staged tensors share it
    for (std::size_t j = g; j < last; ++j)
      if ((begin(staged[j]) - lo) % dtype_size(dtype) != 0)
        ck.fail(describe(args[staged[j]]) + " overlaps " + describe(args[staged[g]]) +
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
