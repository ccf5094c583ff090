// SPDX-License-Identifier: Apache-2.0
// Test plugin (d): declares the name `other` but is built as neox_comm_misnamed.so.
#include "neox/plugin.h"

namespace {
neox::Communicator* make(const neox::Options&) { return nullptr; }
}  // namespace

NEOX_PLUGIN(comm, "other", "0.0", "test: name does not match the file name", &make)
