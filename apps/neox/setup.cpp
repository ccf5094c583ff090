// SPDX-License-Identifier: Apache-2.0
// Shared set-up for the subcommands: config, registry, backend.
#include <filesystem>

#include "commands.h"

namespace neox::app {

Config load_config_or_default(const std::string& path, const std::vector<std::string>& overrides) {
  if (!path.empty()) return load_config(path, overrides);
  return parse_config("", "<defaults>", overrides);
}

std::unique_ptr<PluginRegistry> make_registry(const Config& config) {
  return std::make_unique<PluginRegistry>(config.plugins.search_paths);
}

std::shared_ptr<Backend> make_backend(PluginRegistry& registry, const Config& config) {
  return registry.make_backend(config.plugins.backend, config.plugins.kernels, config.plugins.options);
}

}  // namespace neox::app
