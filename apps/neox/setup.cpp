// SPDX-License-Identifier: Apache-2.0
// Shared set-up for the subcommands: config, registry, backend.
#include <filesystem>

#include "commands.h"

namespace neox::app {

void add_config_options(cxxopts::Options& opts, const std::string& config_help, bool required) {
  auto value = cxxopts::value<std::string>();
  if (!required) value->default_value("");
  opts.add_options()("config", config_help, value)("set", "override a config key: section.key=value (repeatable)",
                                                   cxxopts::value<std::vector<std::string>>());
}

std::vector<std::string> config_overrides(const cxxopts::ParseResult& args) {
  return args.count("set") ? args["set"].as<std::vector<std::string>>() : std::vector<std::string>{};
}

Config config_from_args(const cxxopts::ParseResult& args) {
  const std::string path = args.count("config") ? args["config"].as<std::string>() : std::string();
  if (!path.empty()) return load_config(path, config_overrides(args));
  return parse_config("", "<defaults>", config_overrides(args));
}

std::unique_ptr<PluginRegistry> make_registry(const Config& config) {
  return std::make_unique<PluginRegistry>(config.plugins.search_paths);
}

std::shared_ptr<Backend> make_backend(PluginRegistry& registry, const Config& config) {
  return registry.make_backend(config.plugins.backend, config.plugins.kernels, config.plugins.options);
}

std::shared_ptr<const Tokenizer> tokenizer_from_options(const std::string& type, const std::string& vocab_file,
                                                        const std::string& merge_file) {
  if (is_builtin_tokenizer(type)) return make_tokenizer(type, vocab_file, merge_file);
  PluginRegistry registry;
  return make_tokenizer(TokenizerConfig{type, vocab_file, merge_file}, "--tokenizer-type", &registry);
}

}  // namespace neox::app
