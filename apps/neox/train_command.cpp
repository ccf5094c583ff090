// SPDX-License-Identifier: Apache-2.0
// neox train CONFIG.toml [--set section.key=value]...
#include <csignal>
#include <iostream>
#include "cli_options.h"

#include "commands.h"
#include "neox/error.h"
#include "neox/train/trainer.h"

namespace neox::app {

namespace {
extern "C" void on_stop_signal(int) { request_stop(); }
}  // namespace

int cmd_train(int argc, char** argv) {
  cxxopts::Options opts(argv[0],
                        "Train a GPT-NeoX model as the config says. SIGINT (Ctrl-C) or SIGTERM saves a "
                        "checkpoint after the current step and exits.");
  opts.add_options()("h,help", "show this help");
  add_config_options(opts, "TOML config (see configs/README.md)", true);
  opts.parse_positional({"config"});
  opts.positional_help("CONFIG.toml");
  auto args = opts.parse(argc, argv);
  if (args.count("help") || !args.count("config")) {
    std::cout << opts.help() << "\n";
    return args.count("help") ? 0 : 2;
  }
  Config config = config_from_args(args);

  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  TrainResult r = train(config);
  if (!r.run_dir.empty()) {  // rank 0 only
    if (!r.last_checkpoint.empty()) std::cout << "checkpoint: " << r.last_checkpoint << "\n";
    std::cout << "run directory: " << r.run_dir << "\n";
  }
  return 0;
}

}  // namespace neox::app
