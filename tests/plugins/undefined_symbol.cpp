// SPDX-License-Identifier: Apache-2.0
// Test plugin: a well-formed ELF library that dlopen refuses: it reads a
// variable that nothing defines. Data references are bound when the library
// is loaded, even with RTLD_LAZY, so the loader's own message must come
// through ("cannot load library: ... undefined symbol").
#include <string>

#include "neox/error.h"
#include "neox/plugin.h"

extern "C" int neox_test_undefined_variable;  // defined nowhere

namespace {
// Never called (the library does not load); it reads the variable, so that
// the reference stays in the library.
neox::Communicator* make(const neox::Options&) {
  throw neox::Error("comm undefined-symbol: loaded after all (" + std::to_string(neox_test_undefined_variable) + ")");
}
}  // namespace

NEOX_PLUGIN(comm, "undefined-symbol", "0.0", "test: refers to a variable nothing defines", &make)
