// SPDX-License-Identifier: Apache-2.0
// Test plugin: an optimizer with the right optimizer ABI version, built
// against another kernel table. Optimizers call kernels through
// Backend::kernels (adamw_update, fill), so it is refused like a backend.
#include "neox/plugin.h"

namespace {
neox::Optimizer* make(const neox::Options&, const neox::OptimizerContext&) { return nullptr; }
}  // namespace

extern "C" __attribute__((visibility("default"))) const neox::PluginDescriptor* neox_plugin_entry() {
  static const neox::PluginDescriptor descriptor{neox::kOptimizerAbi.major,
                                                 neox::kOptimizerAbi.minor,
                                                 neox::PluginKind::optimizer,
                                                 "stale-kernels",
                                                 "0.0",
                                                 "test: an optimizer built against another kernel table",
                                                 reinterpret_cast<const void*>(&make),
                                                 neox::kernel_table_fingerprint() + 1};
  return &descriptor;
}
