// SPDX-License-Identifier: Apache-2.0
#include "neox/kernels.h"

#include <string>

#include "neox/error.h"

namespace neox {

namespace {

template <typename F>
bool visit_op(Kernels& k, std::string_view op, F&& f) {
#define NEOX_VISIT(name)  \
  if (op == #name) {      \
    f(k.name, &Kernels::name); \
    return true;          \
  }
  NEOX_KERNEL_OPS(NEOX_VISIT)
#undef NEOX_VISIT
  return false;
}

[[noreturn]] void unknown_op(std::string_view op) {
  std::string names;
  for (auto n : kernel_op_names()) names += (names.empty() ? "" : ", ") + std::string(n);
  throw Error("unknown kernel operation '" + std::string(op) + "' (known: " + names + ")");
}

}  // namespace

const std::vector<std::string_view>& kernel_op_names() {
  static const std::vector<std::string_view> names = {
#define NEOX_NAME(name) #name,
      NEOX_KERNEL_OPS(NEOX_NAME)
#undef NEOX_NAME
  };
  return names;
}

bool kernel_op_present(const Kernels& k, std::string_view op) {
  bool present = false;
  if (!visit_op(const_cast<Kernels&>(k), op, [&](auto& fn, auto) { present = static_cast<bool>(fn); }))
    unknown_op(op);
  return present;
}

void kernel_op_copy(Kernels& dst, const Kernels& src, std::string_view op) {
  if (!kernel_op_present(src, op))
    throw Error("kernel operation '" + std::string(op) + "' is not provided by the source table");
  visit_op(dst, op, [&](auto& fn, auto member) { fn = src.*member; });
}

std::vector<std::string_view> kernel_ops_missing(const Kernels& k) {
  std::vector<std::string_view> missing;
  for (auto n : kernel_op_names())
    if (!kernel_op_present(k, n)) missing.push_back(n);
  return missing;
}

}  // namespace neox
