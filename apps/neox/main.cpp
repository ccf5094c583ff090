// SPDX-License-Identifier: Apache-2.0
// neox: train, evaluate and inspect GPT-NeoX models.
#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

#include "commands.h"
#include "neox/error.h"
#include "neox/launch.h"

namespace {

struct Command {
  const char* name;
  const char* help;
  int (*run)(int, char**);
};

const Command kCommands[] = {
    {"train", "train a model from a TOML config", neox::app::cmd_train},
    {"preprocess", "tokenize jsonl (.gz, .zst) and text files into indexed datasets", neox::app::cmd_preprocess},
    {"data", "indexed datasets: inspect (counts, dtype, a decoded sample), merge (concatenate)", neox::app::cmd_data},
    {"plugins", "list the plugins found, or check one plugin file", neox::app::cmd_plugins},
    {"score", "run a model's forward pass on token ids and write the logits (and loss)", neox::app::cmd_score},
    {"generate", "generate text or token ids from a model (KV cache; greedy, top-k, top-p)", neox::app::cmd_generate},
    {"bench",
     "benchmarks: train (time training steps of a config), op (compare two providers of a kernel), "
     "comm (time collectives)",
     neox::app::cmd_bench},
    {"config", "validate a config file, or print the reference of every key", neox::app::cmd_config},
    {"convert", "convert checkpoints: neox to Hugging Face (--to-hf) and back (--from-hf)", neox::app::cmd_convert},
    {"tokenize", "encode text to token ids or decode ids to text (BPE, char-level, byte)", neox::app::cmd_tokenize},
};

void usage(std::FILE* out) {
  std::fprintf(out, "usage: neox <command> [options]\n\ncommands:\n");
  for (const auto& c : kCommands) std::fprintf(out, "  %-10s %s\n", c.name, c.help);
  std::fprintf(out, "\n'neox <command> --help' describes a command's options.\n");
}

}  // namespace

int main(int argc, char** argv) {
  // The cpu backend's OpenMP kernels and OpenBLAS keep separate thread pools.
  // libgomp's default spin-wait after each parallel region starves OpenBLAS's
  // threads: training steps ran 1.9x slower on 2 cores (docs/performance.md).
  // Idle OpenMP threads sleep instead, unless the user chose otherwise. Set
  // before any plugin loads libgomp, which reads it once.
  setenv("OMP_WAIT_POLICY", "PASSIVE", 0);
  spdlog::set_pattern("[%H:%M:%S] %^%l%$ %v");
  if (const char* level = std::getenv("NEOX_LOG_LEVEL")) spdlog::set_level(spdlog::level::from_str(level));
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  for (const auto& c : kCommands) {
    if (std::strcmp(argv[1], c.name) != 0) continue;
    std::string prog = std::string("neox ") + c.name;
    argv[1] = prog.data();
    // An error this process alone has ends the job (neox::job_failed_alone:
    // with the mpi plugin, MPI_Abort at exit) instead of leaving the other
    // ranks to wait for it until their timeout; one that every rank
    // agreed on (CollectiveError) ends each process normally.
    try {
      return c.run(argc - 1, argv + 1);
    } catch (const neox::CollectiveError& e) {
      spdlog::error("{}", e.what());
      return 1;
    } catch (const neox::Error& e) {
      spdlog::error("{}", e.what());
      neox::job_failed_alone();
      return 1;
    } catch (const std::exception& e) {
      spdlog::error("{}: {}", c.name, e.what());
      neox::job_failed_alone();
      return 1;
    }
  }
  std::fprintf(stderr, "neox: unknown command '%s'\n\n", argv[1]);
  usage(stderr);
  return 2;
}
