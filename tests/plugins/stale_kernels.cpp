// SPDX-License-Identifier: Apache-2.0
// Test plugin: a backend with the right backend ABI version, but built against
// another kernel table (a kernels.h whose operations differ): its fingerprint
// does not match, and a backend fills the table, so it is refused.
#include "neox/plugin.h"

namespace {
neox::Backend* make(const neox::Options&) { return nullptr; }
}  // namespace

extern "C" __attribute__((visibility("default"))) const neox::PluginDescriptor* neox_plugin_entry() {
  static const neox::PluginDescriptor descriptor{neox::kBackendAbi.major,
                                                 neox::kBackendAbi.minor,
                                                 neox::PluginKind::backend,
                                                 "stale-kernels",
                                                 "0.0",
                                                 "test: built against another kernel table",
                                                 reinterpret_cast<const void*>(&make),
                                                 neox::kernel_table_fingerprint() + 1};
  return &descriptor;
}
