// SPDX-License-Identifier: Apache-2.0
// Test plugin (f): a valid plugin whose factory throws neox::Error.
#include "neox/error.h"
#include "neox/plugin.h"

namespace {
neox::Communicator* make(const neox::Options&) { throw neox::Error("test factory refuses: bad option 'x'"); }
}  // namespace

NEOX_PLUGIN(comm, "throws-error", "0.0", "test: factory throws neox::Error", &make)
