// SPDX-License-Identifier: Apache-2.0
// Test plugin (c): declares a `comm` plugin but is built as neox_backend_x.so.
#include "neox/plugin.h"

namespace {
neox::Communicator* make(const neox::Options&) { return nullptr; }
}  // namespace

NEOX_PLUGIN(comm, "x", "0.0", "test: kind does not match the file name", &make)
