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
// Constructing a registry only lists the candidates: files named neox_*.so,
// whose kind and name are read from the file name (neox_<kind>_<name>.so).
// Nothing is loaded until it is asked for:
//   - find() and make_*() load and check only the candidates named for that
//     kind and name, in search order; the first accepted one wins, and each
//     rejected one is kept with its reason before the next is tried;
//   - plugins() and rejected(), the full listing (`neox plugins`), load and
//     check every candidate, once, on the first call of either; a file whose
//     name does not parse is checked there only, and reported.
// A candidate is checked before it is loaded (a regular ELF shared object of
// this machine, not truncated), then loaded with Boost.DLL and checked (entry
// symbol, its kind's ABI version, the kernel table where the kind uses it,
// kind and name against the file name). Every library loaded stays loaded
// until the process exits (its dependencies keep threads and atexit
// handlers); the objects made hold their library all the same.
#pragma once

#include <map>
#include <memory>
#include <mutex>
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
  // The full listing, in search order: every accepted plugin, and every
  // rejected candidate with its reason (shadowed ones included). The first
  // call of either loads and checks every candidate on the search path.
  const std::vector<PluginInfo>& plugins() const;
  const std::vector<PluginRejection>& rejected() const;

  // The names of the candidate files of `kind` (neox_<kind>_<name>.so), in
  // search order, each once. Loads nothing, so a name listed may still be
  // refused when asked for; for commands that only need to know what a
  // name is.
  std::vector<std::string> candidates(PluginKind kind) const;

  // The accepted plugin of that kind and name, loaded and checked now if it
  // was not yet; throws neox::Error naming the candidates of that kind and
  // why each one named `name` was rejected. The reference stays valid as
  // long as the registry.
  const PluginInfo& find(PluginKind kind, const std::string& name) const;

  // Loads one file in isolation and returns its descriptor, or throws
  // neox::Error saying exactly why it would be rejected (the file stays
  // loaded, as every library the registry loads).
  static PluginInfo check_file(const std::string& path);

  // Makes the named backend and applies kernel overrides: for each
  // (op, provider) in `overrides` the op is taken from the `kernels` plugin
  // `provider`. `options` maps plugin names to their option tables (absent
  // means empty). Throws if an op is unknown, not provided, or if the final
  // table still lacks an op.
  std::shared_ptr<Backend> make_backend(const std::string& name, const std::map<std::string, std::string>& overrides,
                                        const std::map<std::string, Options>& options);
  // A KernelProvider alone (for `neox bench op`).
  std::shared_ptr<KernelProvider> make_kernels(const std::string& name, const Options& options);
  std::shared_ptr<Communicator> make_comm(const std::string& name, const Options& options);
  std::shared_ptr<Optimizer> make_optimizer(const std::string& name, const Options& options,
                                            const OptimizerContext& context = OptimizerContext());
  std::shared_ptr<DataSource> make_data(const std::string& name, const Options& options, const DataContext& context);
  std::shared_ptr<Tokenizer> make_tokenizer(const std::string& name, const Options& options);

 private:
  struct Candidate;  // a file on the search path and what checking it found (registry.cpp)
  void scan();
  // Checks candidates_[index] if it was not yet (mutex_ held).
  void check(std::size_t index) const;
  // The accepted candidate of that kind and name (see find).
  const Candidate& accepted(PluginKind kind, const std::string& name) const;
  std::vector<std::string> paths_;
  // Fixed after scan(); their state changes as they are checked, under
  // mutex_, so that const lookups may load.
  mutable std::vector<Candidate> candidates_;
  mutable std::mutex mutex_;
  mutable bool listed_ = false;
  mutable std::vector<PluginInfo> plugins_;
  mutable std::vector<PluginRejection> rejected_;
};

}  // namespace neox
