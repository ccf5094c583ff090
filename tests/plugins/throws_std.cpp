// SPDX-License-Identifier: Apache-2.0
// Test plugin (f): a valid plugin whose factory lets a std::runtime_error escape.
#include <stdexcept>

#include "neox/plugin.h"

namespace {
neox::Communicator* make(const neox::Options&) {
  throw std::runtime_error("test factory failed with a std::runtime_error");
}
}  // namespace

NEOX_PLUGIN(comm, "throws-std", "0.0", "test: factory throws std::runtime_error", &make)
