// SPDX-License-Identifier: Apache-2.0
// Test plugin (g): a valid plugin whose factory returns null.
#include "neox/plugin.h"

namespace {
neox::Communicator* make(const neox::Options&) { return nullptr; }
}  // namespace

NEOX_PLUGIN(comm, "null-factory", "0.0", "test: factory returns null", &make)
