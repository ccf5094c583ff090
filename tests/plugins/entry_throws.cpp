// SPDX-License-Identifier: Apache-2.0
// Test plugins: an entry symbol that throws instead of returning its
// descriptor, a std::runtime_error (NEOX_TEST_THROW_STD) or an int, which is
// no std::exception. The loader must catch both and reject the file.
#include <stdexcept>

#include "neox/plugin.h"

extern "C" __attribute__((visibility("default"))) const neox::PluginDescriptor* neox_plugin_entry() {
#ifdef NEOX_TEST_THROW_STD
  throw std::runtime_error("test entry fails with a std::runtime_error");
#else
  throw 42;
#endif
}
