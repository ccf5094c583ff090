// SPDX-License-Identifier: Apache-2.0
// The neox subcommands. Each takes the arguments after its name (argv[0] is
// "neox <command>") and returns the process exit code.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "cli_options.h"
#include "neox/backend.h"
#include "neox/registry.h"
#include "neox/text/tokenizers.h"
#include "neox/train/config.h"

namespace neox::app {

int cmd_plugins(int argc, char** argv);
int cmd_score(int argc, char** argv);
int cmd_generate(int argc, char** argv);
int cmd_bench(int argc, char** argv);
int cmd_config(int argc, char** argv);
int cmd_train(int argc, char** argv);
int cmd_preprocess(int argc, char** argv);
int cmd_data(int argc, char** argv);
int cmd_convert(int argc, char** argv);
int cmd_tokenize(int argc, char** argv);

// Adds --config FILE (described by `config_help`; "" means optional) and the
// repeatable --set section.key=value.
void add_config_options(cxxopts::Options& opts, const std::string& config_help, bool required);
// The --set values given.
std::vector<std::string> config_overrides(const cxxopts::ParseResult& args);
// The config named by --config (or the defaults when none), with --set overrides.
Config config_from_args(const cxxopts::ParseResult& args);
// A registry searching the manifest's paths.
std::unique_ptr<PluginRegistry> make_registry(const Config& config);
// The manifest's backend with its kernel overrides.
std::shared_ptr<Backend> make_backend(PluginRegistry& registry, const Config& config);
// The tokenizer of --tokenizer-type TYPE [--vocab-file] [--merge-file]: a
// built-in type, or a tokenizer plugin found on NEOX_PLUGIN_PATH or in
// neox's plugin directory (which gets the files as vocab_file/merge_file).
std::shared_ptr<const Tokenizer> tokenizer_from_options(const std::string& type, const std::string& vocab_file,
                                                        const std::string& merge_file);

}  // namespace neox::app
