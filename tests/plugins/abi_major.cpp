// SPDX-License-Identifier: Apache-2.0
// Test plugin (a): built against a future core with another ABI major.
#include "neox/plugin.h"

namespace {
neox::Backend* make(const neox::Options&) { return nullptr; }
}  // namespace

extern "C" __attribute__((visibility("default"))) const neox::PluginDescriptor* neox_plugin_entry() {
  static const neox::PluginDescriptor descriptor{
      neox::kAbiMajor + 1, neox::kAbiMinor, neox::PluginKind::backend, "abi-major", "0.0",
      "test: ABI major above the core's", reinterpret_cast<const void*>(&make),
      neox::kernel_table_fingerprint()};
  return &descriptor;
}
