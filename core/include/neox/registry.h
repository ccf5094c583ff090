// SPDX-License-Identifier: Apache-2.0
// PluginRegistry: finds plugin libraries, checks them, and makes objects.
//
// Search order (first match of a kind and name wins):
//   1. the paths given to the constructor (the manifest's search_paths);
//   2. NEOX_PLUGIN_PATH, colon-separated;
//   3. the plugin directory of the running libneox.so: the build tree's
//      plugins/ (compiled in) when it is the build tree's library, otherwise
//      <libdir>/neox/plugins next to the library (the install layout:
//      <prefix>/lib/libneox.so -> <prefix>/lib/neox/plugins). An installed
//      neox never searches a build tree.
// Candidates are files named neox_*.so. Each is loaded with Boost.DLL and
// checked (entry symbol, ABI version, kind and name against the file name);
// a rejected candidate is kept with the reason. Libraries are never unloaded
// while an object they made is alive: every object holds its library.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "neox/export.h"
#include "neox/optimizer.h"
#include "neox/options.h"
#include "neox/plugin.h"

namespace neox {

struct DataContext;
struct LoadedPlugin;  // a loaded library and its descriptor (registry.cpp)

struct PluginInfo {
  std::string path;
  PluginKind kind{};
  std::string name;
  std::string version;
  std::string description;
  std::uint32_t abi_major = 0;
  std::uint32_t abi_minor = 0;
};

struct PluginRejection {
  std::string path;
  std::string reason;
};

class NEOX_API PluginRegistry {
 public:
  explicit PluginRegistry(std::vector<std::string> search_paths = {});
  ~PluginRegistry();
  PluginRegistry(const PluginRegistry&) = delete;
  PluginRegistry& operator=(const PluginRegistry&) = delete;

  // The directories searched, in order.
  const std::vector<std::string>& search_paths() const { return paths_; }
  const std::vector<PluginInfo>& plugins() const { return plugins_; }
  const std::vector<PluginRejection>& rejected() const { return rejected_; }

  // The accepted plugin of that kind and name; throws neox::Error listing
  // the plugins of that kind that were found and the rejections.
  const PluginInfo& find(PluginKind kind, const std::string& name) const;

  // Loads one file in isolation and returns its descriptor, or throws
  // neox::Error saying exactly why it would be rejected.
  static PluginInfo check_file(const std::string& path);

  // Makes the named backend and applies kernel overrides: for each
  // (op, provider) in `overrides` the op is taken from the `kernels` plugin
  // `provider`. `options` maps plugin names to their option tables (absent
  // means empty). Throws if an op is unknown, not provided, or if the final
  // table still lacks an op.
  std::shared_ptr<Backend> make_backend(const std::string& name,
                                        const std::map<std::string, std::string>& overrides,
                                        const std::map<std::string, Options>& options);
  // A KernelProvider alone (for `neox bench op`).
  std::shared_ptr<KernelProvider> make_kernels(const std::string& name, const Options& options);
  std::shared_ptr<Communicator> make_comm(const std::string& name, const Options& options);
  std::shared_ptr<Optimizer> make_optimizer(const std::string& name, const Options& options,
                                            const OptimizerContext& context = OptimizerContext());
  std::shared_ptr<DataSource> make_data(const std::string& name, const Options& options,
                                        const DataContext& context);
  std::shared_ptr<Tokenizer> make_tokenizer(const std::string& name, const Options& options);

 private:
  void scan();
  std::shared_ptr<LoadedPlugin> library(const PluginInfo& info);
  std::vector<std::string> paths_;
  std::vector<PluginInfo> plugins_;
  std::vector<PluginRejection> rejected_;
  std::map<std::string, std::shared_ptr<LoadedPlugin>> loaded_;
};

}  // namespace neox
