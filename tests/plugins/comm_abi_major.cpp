// SPDX-License-Identifier: Apache-2.0
// Test plugin: a comm whose descriptor carries a major above this core's comm
// ABI, as one built against a neox where another kind's interface changed
// would carry if the versions were not per kind (a plugin of the optimizer
// kind after its bump to 7.0, say). It is checked against the comm version,
// whatever the other kinds' are, and refused.
#include "neox/plugin.h"

namespace {
neox::Communicator* make(const neox::Options&) { return nullptr; }
}  // namespace

extern "C" __attribute__((visibility("default"))) const neox::PluginDescriptor* neox_plugin_entry() {
  static const neox::PluginDescriptor descriptor{neox::kCommAbi.major + 1,
                                                 0,
                                                 neox::PluginKind::comm,
                                                 "abi-major",
                                                 "0.0",
                                                 "test: comm ABI major above the core's",
                                                 reinterpret_cast<const void*>(&make),
                                                 neox::kernel_table_fingerprint()};
  return &descriptor;
}
