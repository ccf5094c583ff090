// SPDX-License-Identifier: Apache-2.0
#include "neox/kernels.h"

#include <cmath>
#include <string>

#include "neox/error.h"

namespace neox {

namespace {

template <typename F>
bool visit_op(Kernels& k, std::string_view op, F&& f) {
#define NEOX_VISIT(name)       \
  if (op == #name) {           \
    f(k.name, &Kernels::name); \
    return true;               \
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
  if (!visit_op(const_cast<Kernels&>(k), op, [&](auto& fn, auto) { present = static_cast<bool>(fn); })) unknown_op(op);
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

std::vector<double> rotary_cos_sin_table(std::int64_t start, std::int64_t count, int rotary_dims, float base) {
  const int half = rotary_dims / 2;
  std::vector<float> inv_freq(static_cast<std::size_t>(half));
  for (int i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(rotary_dims);
    inv_freq[static_cast<std::size_t>(i)] = 1.0f / std::pow(base, exponent);
  }
  std::vector<double> table(static_cast<std::size_t>(count * half * 2));
  for (std::int64_t t = 0; t < count; ++t)
    for (int i = 0; i < half; ++i) {
      const double angle = static_cast<double>(start + t) * static_cast<double>(inv_freq[static_cast<std::size_t>(i)]);
      table[static_cast<std::size_t>((t * half + i) * 2)] = std::cos(angle);
      table[static_cast<std::size_t>((t * half + i) * 2 + 1)] = std::sin(angle);
    }
  return table;
}

}  // namespace neox
