// SPDX-License-Identifier: Apache-2.0
// The plugin ABI: what a plugin shared library exports.
//
// A plugin is a shared library named neox_<kind>_<name>.so that exports one
// symbol, NEOX_PLUGIN_ENTRY_SYMBOL, through NEOX_PLUGIN(...). The symbol is a
// function returning a pointer to a static PluginDescriptor. The loader:
//   1. checks the file before loading it (a regular file, an ELF shared
//      object of this machine, not truncated), loads it and finds the symbol;
//   2. checks the ABI version of the plugin's kind: abi_major equal to
//      abi_version(kind).major and abi_minor not above its minor (a plugin
//      built against a newer minor may use what this core lacks);
//   3. for the kinds that use the kernel table (uses_kernel_table), checks
//      that the plugin was built against this core's table
//      (kernels_fingerprint); then that kind and name match the file name;
//   4. calls factory (cast to the kind's factory type below) when asked for
//      the plugin.
// Libraries stay loaded until the process exits. Factories may throw
// neox::Error; nothing else may escape a plugin.
//
// ABI rule (docs/plugins.md): each kind has its own version, so that a
// change to one interface does not invalidate the plugins of the others.
// A kind's major changes when something its plugins implement or call
// changes layout or virtual functions; its minor for additions that old
// plugins do not see. The types every kind shares (Tensor, Options, Error,
// DType, PluginDescriptor) change every kind's major. The kernel table is
// guarded by its fingerprint instead. Plugins must be built with the same
// C++ standard library as the core.
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

enum class PluginKind : std::uint32_t {
  backend = 1,
  kernels = 2,
  comm = 3,
  optimizer = 4,
  data = 5,
  tokenizer = 6,
};

// Every kind, in the order of their values.
inline constexpr PluginKind kPluginKinds[] = {PluginKind::backend,   PluginKind::kernels, PluginKind::comm,
                                              PluginKind::optimizer, PluginKind::data,    PluginKind::tokenizer};

struct AbiVersion {
  std::uint32_t major;
  std::uint32_t minor;
  friend constexpr bool operator==(AbiVersion a, AbiVersion b) { return a.major == b.major && a.minor == b.minor; }
};

// The ABI version of each kind; the history is in docs/plugins.md. Until 6.0
// one number covered every kind, so each starts at 6.0 and every plugin
// built then still loads. backend and kernels share one: a KernelProvider
// fills the Backend's kernel table and attaches to the Backend.
inline constexpr AbiVersion kBackendAbi{6, 1};    // backend.h (Backend, KernelProvider), kernels.h
inline constexpr AbiVersion kCommAbi{6, 0};       // communicator.h, launch.h
inline constexpr AbiVersion kOptimizerAbi{7, 0};  // optimizer.h, arena.h; the Backend and Communicator it calls
inline constexpr AbiVersion kDataAbi{6, 0};       // data_source.h
inline constexpr AbiVersion kTokenizerAbi{6, 0};  // tokenizer.h

// The version a plugin of `kind` is built against and checked against;
// {0, 0} for a value that is not a kind (no kind has major 0).
constexpr AbiVersion abi_version(PluginKind kind) {
  switch (kind) {
    case PluginKind::backend:
    case PluginKind::kernels:
      return kBackendAbi;
    case PluginKind::comm:
      return kCommAbi;
    case PluginKind::optimizer:
      return kOptimizerAbi;
    case PluginKind::data:
      return kDataAbi;
    case PluginKind::tokenizer:
      return kTokenizerAbi;
  }
  return {0, 0};
}

// Whether plugins of `kind` index the Kernels table, so that the loader
// compares their kernels_fingerprint with the core's: backends fill it,
// kernels providers fill entries of it, optimizers call adamw_update, fill
// and others through Backend::kernels. The other kinds never see the table;
// adding a kernel op does not concern them.
constexpr bool uses_kernel_table(PluginKind kind) {
  return kind == PluginKind::backend || kind == PluginKind::kernels || kind == PluginKind::optimizer;
}

// "backend", "kernels", ...; "unknown(<n>)" for other values.
NEOX_API const char* plugin_kind_name(PluginKind kind);

// The layout of this struct is the same for every kind and every version:
// the loader reads kind before it knows which version to compare.
struct PluginDescriptor {
  std::uint32_t abi_major;  // abi_version(kind) when built
  std::uint32_t abi_minor;
  PluginKind kind;
  const char* name;                   // [a-z0-9-]+, as in the file name
  const char* version;                // the plugin's own version, free text
  const char* description;            // one line
  const void* factory;                // one of the factory types below, by kind
  std::uint64_t kernels_fingerprint;  // kernel_table_fingerprint() when built
};

// Factory types. The returned object is owned by the caller (the registry).
// Changing one changes its kind's major.
using BackendFactory = Backend* (*)(const Options& options);
using KernelsFactory = KernelProvider* (*)(const Options& options);
using CommFactory = Communicator* (*)(const Options& options);
using OptimizerFactory = Optimizer* (*)(const Options& options, const OptimizerContext& context);
using DataFactory = DataSource* (*)(const Options& options, const DataContext& context);
using TokenizerFactory = Tokenizer* (*)(const Options& options);

// The factory type of each kind (NEOX_PLUGIN checks the factory against it).
template <PluginKind K>
struct FactoryFor;
template <>
struct FactoryFor<PluginKind::backend> {
  using type = BackendFactory;
};
template <>
struct FactoryFor<PluginKind::kernels> {
  using type = KernelsFactory;
};
template <>
struct FactoryFor<PluginKind::comm> {
  using type = CommFactory;
};
template <>
struct FactoryFor<PluginKind::optimizer> {
  using type = OptimizerFactory;
};
template <>
struct FactoryFor<PluginKind::data> {
  using type = DataFactory;
};
template <>
struct FactoryFor<PluginKind::tokenizer> {
  using type = TokenizerFactory;
};

}  // namespace neox

#define NEOX_PLUGIN_ENTRY_SYMBOL "neox_plugin_entry"

// Use once per plugin, at namespace scope:
//   NEOX_PLUGIN(backend, "cpu", "1.0", "fp32 CPU kernels", &make_cpu_backend)
// The factory must have the kind's factory type (a compile error otherwise).
// The descriptor records the ABI version of KIND and, for every kind, the
// kernel table's fingerprint (checked only where uses_kernel_table(KIND)).
#define NEOX_PLUGIN(KIND, NAME, VERSION, DESCRIPTION, FACTORY)                                            \
  extern "C" __attribute__((visibility("default"))) const ::neox::PluginDescriptor* neox_plugin_entry() { \
    using neox_factory_t = ::neox::FactoryFor<::neox::PluginKind::KIND>::type;                            \
    static constexpr ::neox::AbiVersion neox_abi = ::neox::abi_version(::neox::PluginKind::KIND);         \
    static const ::neox::PluginDescriptor descriptor{                                                     \
        neox_abi.major,                                                                                   \
        neox_abi.minor,                                                                                   \
        ::neox::PluginKind::KIND,                                                                         \
        NAME,                                                                                             \
        VERSION,                                                                                          \
        DESCRIPTION,                                                                                      \
        reinterpret_cast<const void*>(static_cast<neox_factory_t>(FACTORY)),                              \
        ::neox::kernel_table_fingerprint()};                                                              \
    return &descriptor;                                                                                   \
  }
