// SPDX-License-Identifier: Apache-2.0
// Test plugin (a): a backend built against a future core with another backend
// ABI major.
#include "neox/plugin.h"

namespace {
neox::Backend* make(const neox::Options&) { return nullptr; }
}  // namespace

extern "C" __attribute__((visibility("default"))) const neox::PluginDescriptor* neox_plugin_entry() {
  static const neox::PluginDescriptor descriptor{neox::kBackendAbi.major + 1,
                                                 neox::kBackendAbi.minor,
                                                 neox::PluginKind::backend,
                                                 "abi-major",
                                                 "0.0",
                                                 "test: ABI major above the core's",
                                                 reinterpret_cast<const void*>(&make),
                                                 neox::kernel_table_fingerprint()};
  return &descriptor;
}
