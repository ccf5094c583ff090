// SPDX-License-Identifier: Apache-2.0
// The plugin ABI: what a plugin shared library exports.
//
// A plugin is a shared library named neox_<kind>_<name>.so that exports one
// symbol, NEOX_PLUGIN_ENTRY_SYMBOL, through NEOX_PLUGIN(...). The symbol is a
// function returning a pointer to a static PluginDescriptor. The loader:
//   1. finds the symbol (missing: rejected, naming the file and the symbol);
//   2. checks abi_major == kAbiMajor and abi_minor <= kAbiMinor (a plugin
//      built against a newer minor may use what this core lacks);
//   3. checks that the plugin was built against this core's kernel table
//      (kernels_fingerprint) and that kind and name match the file name;
//   4. calls factory (cast to the kind's factory type below) when the
//      manifest asks for the plugin.
// The library stays loaded while anything it made lives. Factories may throw
// neox::Error; nothing else may escape a plugin.
//
// ABI rule: kAbiMajor changes when any interface class in core/include/neox
// changes layout or virtual functions, or when the Kernels table changes
// (members added, removed or reordered); kAbiMinor changes for additions
// that old plugins do not see (a new plugin kind, a new free function).
// Plugins must be built with the same C++ standard library as the core.
#pragma once

#include <cstdint>

#include "neox/export.h"
#include "neox/kernels.h"

namespace neox {

class Backend;
class KernelProvider;
class Communicator;
class Optimizer;
class DataSource;
class Tokenizer;
class Options;
struct DataContext;
struct OptimizerContext;

inline constexpr std::uint32_t kAbiMajor = 6;
inline constexpr std::uint32_t kAbiMinor = 0;

enum class PluginKind : std::uint32_t {
  backend = 1,
  kernels = 2,
  comm = 3,
  optimizer = 4,
  data = 5,
  tokenizer = 6,
};

// "backend", "kernels", ...; "unknown(<n>)" for other values.
NEOX_API const char* plugin_kind_name(PluginKind kind);

struct PluginDescriptor {
  std::uint32_t abi_major;
  std::uint32_t abi_minor;
  PluginKind kind;
  const char* name;         // [a-z0-9-]+, as in the file name
  const char* version;      // the plugin's own version, free text
  const char* description;  // one line
  const void* factory;      // one of the factory types below, by kind
  std::uint64_t kernels_fingerprint;  // kernel_table_fingerprint() when built
};

// Factory types. The returned object is owned by the caller (the registry),
// which deletes it before unloading the library.
using BackendFactory = Backend* (*)(const Options& options);
using KernelsFactory = KernelProvider* (*)(const Options& options);
using CommFactory = Communicator* (*)(const Options& options);
using OptimizerFactory = Optimizer* (*)(const Options& options, const OptimizerContext& context);
using DataFactory = DataSource* (*)(const Options& options, const DataContext& context);
using TokenizerFactory = Tokenizer* (*)(const Options& options);

// The factory type of each kind (NEOX_PLUGIN checks the factory against it).
template <PluginKind K> struct FactoryFor;
template <> struct FactoryFor<PluginKind::backend> { using type = BackendFactory; };
template <> struct FactoryFor<PluginKind::kernels> { using type = KernelsFactory; };
template <> struct FactoryFor<PluginKind::comm> { using type = CommFactory; };
template <> struct FactoryFor<PluginKind::optimizer> { using type = OptimizerFactory; };
template <> struct FactoryFor<PluginKind::data> { using type = DataFactory; };
template <> struct FactoryFor<PluginKind::tokenizer> { using type = TokenizerFactory; };

}  // namespace neox

#define NEOX_PLUGIN_ENTRY_SYMBOL "neox_plugin_entry"

// Use once per plugin, at namespace scope:
//   NEOX_PLUGIN(backend, "cpu", "1.0", "fp32 CPU kernels", &make_cpu_backend)
// The factory must have the kind's factory type (a compile error otherwise).
#define NEOX_PLUGIN(KIND, NAME, VERSION, DESCRIPTION, FACTORY)                          \
  extern "C" __attribute__((visibility("default"))) const ::neox::PluginDescriptor*     \
  neox_plugin_entry() {                                                               \
    using neox_factory_t = ::neox::FactoryFor<::neox::PluginKind::KIND>::type;          \
    static const ::neox::PluginDescriptor descriptor{                                 \
        ::neox::kAbiMajor, ::neox::kAbiMinor, ::neox::PluginKind::KIND, NAME, VERSION,  \
        DESCRIPTION, reinterpret_cast<const void*>(static_cast<neox_factory_t>(FACTORY)),  \
        ::neox::kernel_table_fingerprint()};                                          \
    return &descriptor;                                                               \
  }
