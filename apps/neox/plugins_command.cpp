// SPDX-License-Identifier: Apache-2.0
// neox plugins [--check FILE.so] [--path DIR]...
#include <iostream>
#include <iterator>
#include "cli_options.h"

#include "commands.h"
#include "neox/error.h"

namespace neox::app {

namespace {
void print_info(const PluginInfo& p) {
  std::cout << plugin_kind_name(p.kind) << "\t" << p.name << "\t" << p.version << "\tABI " << p.abi_major << "."
            << p.abi_minor << "\t" << p.path << "\n";
}
}  // namespace

int cmd_plugins(int argc, char** argv) {
  cxxopts::Options opts(argv[0],
                        "List every plugin found (kind, name, version, ABI, path) and why each "
                        "rejected candidate was rejected.");
  opts.add_options()("check", "load one plugin file in isolation and report its descriptor or why it is rejected",
                     cxxopts::value<std::string>())("path", "extra directory to search (repeatable)",
                                                    cxxopts::value<std::vector<std::string>>())("h,help",
                                                                                                "show this help");
  auto args = opts.parse(argc, argv);
  if (args.count("help")) {
    std::cout << opts.help() << "\n";
    return 0;
  }
  if (args.count("check")) {
    const auto file = args["check"].as<std::string>();
    try {
      PluginInfo info = PluginRegistry::check_file(file);
      std::cout << "ok: " << file << "\n";
      std::cout << "  kind:        " << plugin_kind_name(info.kind) << "\n"
                << "  name:        " << info.name << "\n"
                << "  version:     " << info.version << "\n"
                << "  ABI:         " << info.abi_major << "." << info.abi_minor << " (this neox's "
                << plugin_kind_name(info.kind) << " ABI: " << abi_version(info.kind).major << "."
                << abi_version(info.kind).minor << ")\n"
                << "  description: " << info.description << "\n";
      return 0;
    } catch (const Error& e) {
      std::cout << "rejected: " << e.what() << "\n";
      return 1;
    }
  }
  std::vector<std::string> paths;
  if (args.count("path")) paths = args["path"].as<std::vector<std::string>>();
  PluginRegistry registry(paths);
  std::cout << "search path:";
  for (const auto& p : registry.search_paths()) std::cout << " " << p;
  // Each kind has its own ABI version (docs/plugins.md).
  std::cout << "\nplugin ABI:";
  for (PluginKind kind : kPluginKinds)
    std::cout << " " << plugin_kind_name(kind) << " " << abi_version(kind).major << "." << abi_version(kind).minor
              << (kind == kPluginKinds[std::size(kPluginKinds) - 1] ? "" : ",");
  std::cout << "\n\nkind\tname\tversion\tABI\tpath\n";
  for (const auto& p : registry.plugins()) print_info(p);
  if (!registry.rejected().empty()) {
    std::cout << "\nrejected:\n";
    for (const auto& r : registry.rejected()) std::cout << "  " << r.reason << "\n";
  }
  return 0;
}

}  // namespace neox::app
