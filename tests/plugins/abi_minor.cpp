// SPDX-License-Identifier: Apache-2.0
// Test plugin (b): a backend built against a newer backend ABI minor than this
// core has.
#include "neox/plugin.h"

namespace {
neox::Backend* make(const neox::Options&) { return nullptr; }
}  // namespace

extern "C" __attribute__((visibility("default"))) const neox::PluginDescriptor* neox_plugin_entry() {
  static const neox::PluginDescriptor descriptor{neox::kBackendAbi.major,
                                                 neox::kBackendAbi.minor + 1,
                                                 neox::PluginKind::backend,
                                                 "abi-minor",
                                                 "0.0",
                                                 "test: ABI minor above the core's",
                                                 reinterpret_cast<const void*>(&make),
                                                 neox::kernel_table_fingerprint()};
  return &descriptor;
}
