// SPDX-License-Identifier: Apache-2.0
// neox config [--reference] [--check FILE] [--set k=v]...
#include <iostream>
#include "cli_options.h"

#include "commands.h"

namespace neox::app {

int cmd_config(int argc, char** argv) {
  cxxopts::Options opts(argv[0], "Validate a config, or print the reference of every key (configs/README.md).");
  opts.add_options()("reference", "print the Markdown reference of every key")(
      "check", "validate a config file and print the settings it resolves to", cxxopts::value<std::string>())(
      "set", "override a key: section.key=value (repeatable)", cxxopts::value<std::vector<std::string>>())(
      "h,help", "show this help");
  auto args = opts.parse(argc, argv);
  if (args.count("help") || (!args.count("reference") && !args.count("check"))) {
    std::cout << opts.help() << "\n";
    return args.count("help") ? 0 : 2;
  }
  if (args.count("reference")) {
    std::cout << config_reference_markdown();
    return 0;
  }
  Config c = load_config(args["check"].as<std::string>(), config_overrides(args));
  const ModelConfig& m = c.model;
  std::cout << c.path << ": ok\n"
            << "  plugins: backend=" << c.plugins.backend << " comm=" << c.plugins.comm
            << " optimizer=" << c.plugins.optimizer << " data=" << (c.plugins.data.empty() ? "-" : c.plugins.data)
            << "\n  model: " << m.num_layers << " layers, hidden " << m.hidden_size << ", " << m.num_attention_heads
            << " heads, seq " << m.seq_length << ", vocab " << m.vocab_size << " (padded " << m.padded_vocab_size()
            << "), " << m.num_parameters() << " parameters\n";
  return 0;
}

}  // namespace neox::app
