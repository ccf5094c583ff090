// SPDX-License-Identifier: Apache-2.0
#include "neox/registry.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/dll/runtime_symbol_info.hpp>
#include <boost/dll/shared_library.hpp>
#include <cstdlib>
#include <dlfcn.h>
#include <filesystem>
#include <set>
#include <sstream>

#include "neox/backend.h"
#include "neox/communicator.h"
#include "neox/data_source.h"
#include "neox/error.h"
#include "neox/optimizer.h"
#include "neox/tokenizer.h"

namespace fs = std::filesystem;

namespace neox {

struct LoadedPlugin {
  boost::dll::shared_library library;
  const PluginDescriptor* descriptor = nullptr;
};

namespace {

constexpr const char* kPrefix = "neox_";

std::string abi_str(std::uint32_t major, std::uint32_t minor) {
  return std::to_string(major) + "." + std::to_string(minor);
}

// The directory holding the libneox.so this code was loaded from
// (canonical), or empty when the loader cannot say.
fs::path core_library_dir() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<const void*>(&core_library_dir), &info) == 0 || !info.dli_fname ||
      !*info.dli_fname)
    return {};
  std::error_code ec;
  fs::path lib = fs::weakly_canonical(fs::path(info.dli_fname), ec);
  return ec ? fs::path() : lib.parent_path();
}

// The plugin directory that belongs to the running libneox.so: the build
// tree's plugins/ when it is the build tree's library (<build>/lib), else the
// install layout <libdir>/neox/plugins next to it, so that an installed neox
// never loads plugins of a build tree that happens to exist on the machine,
// and any program linking an installed libneox finds the installed plugins.
// Without dladdr's answer: the install layout relative to the executable,
// <prefix>/bin/neox -> <prefix>/<libdir>/neox/plugins.
std::string own_plugin_dir() {
  const fs::path lib = core_library_dir();
  if (lib.empty()) {
    boost::system::error_code ec;
    auto exe = boost::dll::program_location(ec);
    if (ec) return {};
    return (fs::path(exe.string()).parent_path().parent_path() / NEOX_INSTALL_PLUGIN_DIR).string();
  }
  std::error_code ec;
  if (fs::equivalent(lib, fs::path(NEOX_BUILD_LIB_DIR), ec)) return NEOX_BUILD_PLUGIN_DIR;
  return (lib / NEOX_PLUGIN_SUBDIR).string();
}

// Loads `path`, checks its descriptor, and fills `info`.
std::shared_ptr<LoadedPlugin> load_checked(const std::string& path, PluginInfo& info) {
  auto loaded = std::make_shared<LoadedPlugin>();
  auto& lib = loaded->library;
  boost::system::error_code ec;
  lib.load(path, boost::dll::load_mode::rtld_lazy | boost::dll::load_mode::rtld_local, ec);
  if (ec) {
    const char* msg = dlerror();  // Boost's error code loses the loader's detail
    throw Error(path + ": cannot load library: " + (msg ? std::string(msg) : ec.message()));
  }
  if (!lib.has(NEOX_PLUGIN_ENTRY_SYMBOL))
    throw Error(path + ": not a neox plugin: missing entry symbol '" NEOX_PLUGIN_ENTRY_SYMBOL
                "' (define it with NEOX_PLUGIN(...) from neox/plugin.h)");
  auto& entry = lib.get<const PluginDescriptor*()>(NEOX_PLUGIN_ENTRY_SYMBOL);
  // Plugins are never unmapped, even when the last object they made is gone:
  // their dependencies (libgomp, OpenBLAS, CUDA) keep threads and atexit
  // handlers whose code must stay mapped until the process ends.
  dlopen(path.c_str(), RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE);
  const PluginDescriptor* d = nullptr;
  try {
    d = entry();
  } catch (const std::exception& e) {
    throw Error(path + ": entry symbol '" NEOX_PLUGIN_ENTRY_SYMBOL "' threw: " + e.what());
  }
  if (!d) throw Error(path + ": entry symbol '" NEOX_PLUGIN_ENTRY_SYMBOL "' returned null");
  info.path = path;
  info.kind = d->kind;
  info.name = d->name ? d->name : "";
  info.version = d->version ? d->version : "";
  info.description = d->description ? d->description : "";
  info.abi_major = d->abi_major;
  info.abi_minor = d->abi_minor;
  // The kind first: it says which version the plugin's ABI is compared with.
  const std::string kind = plugin_kind_name(d->kind);
  const AbiVersion own = abi_version(d->kind);
  if (own.major == 0) throw Error(path + ": plugin '" + info.name + "' declares an unknown kind " + kind);
  if (d->abi_major != own.major || d->abi_minor > own.minor)
    throw Error(path + ": plugin's " + kind + " ABI " + abi_str(d->abi_major, d->abi_minor) +
                " is incompatible with this neox (" + kind + " ABI " + abi_str(own.major, own.minor) +
                "; needs the same major and a minor not above " + std::to_string(own.minor) +
                "): rebuild the plugin against this neox");
  if (uses_kernel_table(d->kind) && d->kernels_fingerprint != kernel_table_fingerprint())
    throw Error(path + ": plugin was built against another kernel table (neox/kernels.h changed; fingerprint " +
                std::to_string(d->kernels_fingerprint) + ", this neox " + std::to_string(kernel_table_fingerprint()) +
                "): rebuild the plugin against this neox");
  if (info.name.empty()) throw Error(path + ": plugin declares an empty name");
  std::string expected = std::string(kPrefix) + kind + "_" + info.name;
  std::string stem = fs::path(path).stem().string();
  if (stem != expected)
    throw Error(path + ": file name does not match the plugin's descriptor (kind '" + kind +
                "', name '" + info.name + "' must be in a file named " + expected + ".so)");
  if (!d->factory) throw Error(path + ": plugin '" + info.name + "' has no factory");
  loaded->descriptor = d;
  return loaded;
}

}  // namespace

PluginRegistry::PluginRegistry(std::vector<std::string> search_paths) {
  for (auto& p : search_paths)
    if (!p.empty()) paths_.push_back(p);
  if (const char* env = std::getenv("NEOX_PLUGIN_PATH")) {
    std::stringstream ss(env);
    std::string item;
    while (std::getline(ss, item, ':'))
      if (!item.empty()) paths_.push_back(item);
  }
  if (auto dir = own_plugin_dir(); !dir.empty()) paths_.push_back(dir);
  scan();
}

PluginRegistry::~PluginRegistry() = default;

void PluginRegistry::scan() {
  std::set<std::string> seen_files;
  for (const auto& dir : paths_) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) continue;
    std::vector<fs::path> files;
    for (auto& entry : fs::directory_iterator(dir, ec)) {
      auto name = entry.path().filename().string();
      if (name.rfind(kPrefix, 0) == 0 && entry.path().extension() == ".so") files.push_back(entry.path());
    }
    std::sort(files.begin(), files.end());
    for (auto& file : files) {
      auto canonical = fs::weakly_canonical(file, ec).string();
      if (!seen_files.insert(canonical).second) continue;
      PluginInfo info;
      try {
        auto loaded = load_checked(file.string(), info);
        bool shadowed = false;
        for (auto& p : plugins_)
          if (p.kind == info.kind && p.name == info.name) shadowed = true;
        if (shadowed) {
          rejected_.push_back({file.string(), std::string("shadowed by an earlier ") +
                                                  plugin_kind_name(info.kind) + " plugin '" +
                                                  info.name + "' found first in the search path"});
          continue;
        }
        plugins_.push_back(info);
        loaded_[info.path] = std::move(loaded);
      } catch (const Error& e) {
        rejected_.push_back({file.string(), e.what()});
      }
    }
  }
}

PluginInfo PluginRegistry::check_file(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw Error(path + ": no such file");
  PluginInfo info;
  load_checked(path, info);
  return info;
}

const PluginInfo& PluginRegistry::find(PluginKind kind, const std::string& name) const {
  for (auto& p : plugins_)
    if (p.kind == kind && p.name == name) return p;
  std::string msg = std::string("no ") + plugin_kind_name(kind) + " plugin named '" + name + "'";
  std::string found;
  for (auto& p : plugins_)
    if (p.kind == kind) found += (found.empty() ? "" : ", ") + p.name;
  msg += found.empty() ? std::string(" (none of that kind was found)") : " (found: " + found + ")";
  msg += "; searched:";
  for (auto& d : paths_) msg += " " + d;
  for (auto& r : rejected_)
    if (r.path.find(std::string("_") + name + ".so") != std::string::npos)
      msg += "\n  rejected " + r.reason;
  throw Error(msg);
}

std::shared_ptr<LoadedPlugin> PluginRegistry::library(const PluginInfo& info) {
  return loaded_.at(info.path);
}

namespace {

// Wraps a raw object made by a plugin so that it holds its library: the
// object is deleted first, then the library may go.
template <typename T>
std::shared_ptr<T> hold(T* object, std::shared_ptr<LoadedPlugin> lib, const PluginInfo& info) {
  if (!object) throw Error(info.path + ": factory of plugin '" + info.name + "' returned null");
  return std::shared_ptr<T>(object, [lib = std::move(lib)](T* p) { delete p; });
}

template <typename Factory, typename... Args>
auto call_factory(const PluginInfo& info, const LoadedPlugin& lib, Args&&... args) {
  auto factory = reinterpret_cast<Factory>(const_cast<void*>(lib.descriptor->factory));
  try {
    return factory(std::forward<Args>(args)...);
  } catch (const DeviceUnavailable& e) {  // keeps its type: callers skip rather than fail
    throw DeviceUnavailable(std::string(plugin_kind_name(info.kind)) + " plugin '" + info.name + "': " + e.what());
  } catch (const Error& e) {
    throw Error(std::string(plugin_kind_name(info.kind)) + " plugin '" + info.name + "': " + e.what());
  } catch (const std::exception& e) {
    throw Error(std::string(plugin_kind_name(info.kind)) + " plugin '" + info.name +
                "' failed: " + e.what());
  } catch (...) {
    throw Error(std::string(plugin_kind_name(info.kind)) + " plugin '" + info.name +
                "' failed with an exception that is not a std::exception");
  }
}

}  // namespace

std::shared_ptr<Backend> PluginRegistry::make_backend(const std::string& name,
                                                      const std::map<std::string, std::string>& overrides,
                                                      const std::map<std::string, Options>& options) {
  auto options_for = [&](const std::string& plugin) {
    auto it = options.find(plugin);
    return it == options.end() ? Options("plugins.options." + plugin) : it->second;
  };
  const PluginInfo& info = find(PluginKind::backend, name);
  auto lib = library(info);
  auto backend = hold(call_factory<BackendFactory>(info, *lib, options_for(name)), lib, info);
  backend->register_kernels(backend->kernels);

  std::map<std::string, std::shared_ptr<KernelProvider>> providers;
  for (const auto& [op, provider_name] : overrides) {
    kernel_op_present(backend->kernels, op);  // throws for an unknown op
    auto& provider = providers[provider_name];
    if (!provider) {
      provider = make_kernels(provider_name, options_for(provider_name));
      if (provider->device() != backend->device().type)
        throw Error("kernels plugin '" + provider_name + "' is for another device than backend '" +
                    name + "' (" + device_name(backend->device()) + ")");
      provider->attach(*backend);
    }
    Kernels table;
    provider->register_kernels(table);
    if (!kernel_op_present(table, op))
      throw Error("kernels plugin '" + provider_name + "' does not provide operation '" + op + "'");
    kernel_op_copy(backend->kernels, table, op);
    spdlog::debug("kernel {} of backend {} provided by {}", op, name, provider_name);
  }
  auto missing = kernel_ops_missing(backend->kernels);
  if (!missing.empty()) {
    std::string list;
    for (auto m : missing) list += (list.empty() ? "" : ", ") + std::string(m);
    throw Error("backend '" + name + "' (" + info.path + ") does not provide: " + list);
  }
  if (providers.empty()) return backend;
  // Override kernels may capture provider state: keep the providers alive with the backend.
  // The backend (second) is destroyed before the providers (first): its kernel table holds
  // std::functions whose code lives in the providers' libraries.
  auto keep = std::make_shared<std::pair<decltype(providers), std::shared_ptr<Backend>>>(
      std::move(providers), std::move(backend));
  Backend* raw = keep->second.get();
  return std::shared_ptr<Backend>(keep, raw);
}

std::shared_ptr<KernelProvider> PluginRegistry::make_kernels(const std::string& name, const Options& options) {
  const PluginInfo& info = find(PluginKind::kernels, name);
  auto lib = library(info);
  return hold(call_factory<KernelsFactory>(info, *lib, options), lib, info);
}

std::shared_ptr<Communicator> PluginRegistry::make_comm(const std::string& name, const Options& options) {
  const PluginInfo& info = find(PluginKind::comm, name);
  auto lib = library(info);
  return hold(call_factory<CommFactory>(info, *lib, options), lib, info);
}

std::shared_ptr<Optimizer> PluginRegistry::make_optimizer(const std::string& name, const Options& options) {
  const PluginInfo& info = find(PluginKind::optimizer, name);
  auto lib = library(info);
  return hold(call_factory<OptimizerFactory>(info, *lib, options), lib, info);
}

std::shared_ptr<DataSource> PluginRegistry::make_data(const std::string& name, const Options& options,
                                                      const DataContext& context) {
  const PluginInfo& info = find(PluginKind::data, name);
  auto lib = library(info);
  return hold(call_factory<DataFactory>(info, *lib, options, context), lib, info);
}

std::shared_ptr<Tokenizer> PluginRegistry::make_tokenizer(const std::string& name, const Options& options) {
  const PluginInfo& info = find(PluginKind::tokenizer, name);
  auto lib = library(info);
  return hold(call_factory<TokenizerFactory>(info, *lib, options), lib, info);
}

}  // namespace neox
