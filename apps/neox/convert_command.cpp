// SPDX-License-Identifier: Apache-2.0
// neox convert --to-hf CHECKPOINT --out DIR
// neox convert --from-hf HF_DIR --out SAVE_DIR
#include <filesystem>
#include <iostream>
#include "cli_options.h"

#include "commands.h"
#include "neox/error.h"
#include "neox/io/hf.h"
#include "neox/model/gpt_neox.h"
#include "neox/text/tokenizers.h"
#include "neox/train/checkpoint.h"

namespace fs = std::filesystem;

namespace neox::app {

namespace {

void require_empty_or_absent(const std::string& dir, const char* what) {
  std::error_code ec;
  if (!fs::exists(fs::symlink_status(dir, ec))) return;
  if (!fs::is_directory(dir, ec)) throw Error(dir + ": exists and is not a directory");
  if (!fs::is_empty(dir, ec))
    throw Error(dir + ": exists and is not empty; convert writes " + what + " only into a new or empty directory");
}

int to_hf(const cxxopts::ParseResult& args, const Config& run_config) {
  const std::string checkpoint = resolve_checkpoint(args["to-hf"].as<std::string>());
  const std::string out = args["out"].as<std::string>();
  require_empty_or_absent(out, "a Hugging Face model");
  const std::string config_file = (fs::path(checkpoint) / "config.toml").string();
  const Config saved = parse_config(read_checkpoint_config(checkpoint), config_file);
  HfExportOptions options;
  // The checkpoint's [tokenizer]: its end-of-document token is bos and eos
  // (as in GPT-NeoX-20B's and Pythia's config.json), and its files go beside
  // the weights.
  auto registry = make_registry(run_config);
  const auto tokenizer =
      make_tokenizer(saved.tokenizer, config_file, registry.get(), saved.plugins.options_for(saved.tokenizer.type));
  if (tokenizer) options.bos_token_id = options.eos_token_id = tokenizer->eod_id();
  if (args.count("bos-token-id")) options.bos_token_id = args["bos-token-id"].as<std::int64_t>();
  if (args.count("eos-token-id")) options.eos_token_id = args["eos-token-id"].as<std::int64_t>();
  (void)hf_config_json(saved.model, options);  // refuse unrepresentable models before loading anything

  auto backend = make_backend(*registry, run_config);
  GPTNeoX model(saved.model, backend);
  const CheckpointState state = load_checkpoint(checkpoint, model, nullptr);
  save_hf(model, out, options);
  for (const TokenizerFile& f : tokenizer_files(saved.tokenizer))
    fs::copy_file(f.path, fs::path(out) / f.name, fs::copy_options::overwrite_existing);
  std::cout << "wrote " << out << " (GPTNeoXForCausalLM, " << saved.model.num_parameters() << " parameters) from "
            << checkpoint << " (iteration " << state.iteration << ")\n";
  return 0;
}

int from_hf(const cxxopts::ParseResult& args, const Config& run_config) {
  const std::string hf_dir = args["from-hf"].as<std::string>();
  const std::string out = args["out"].as<std::string>();
  require_empty_or_absent(out, "a checkpoint");
  const ModelConfig model_config = read_hf_config(hf_dir);

  auto registry = make_registry(run_config);
  auto backend = make_backend(*registry, run_config);
  GPTNeoX model(model_config, backend);
  load_hf_weights(model, hf_dir);

  CheckpointState state;
  state.iteration = 0;
  std::error_code ec;
  const fs::path source = fs::absolute(hf_dir, ec);
  state.config_toml = "# Imported from the Hugging Face model " + (ec ? hf_dir : source.string()) +
                      " by 'neox convert --from-hf'.\n"
                      "# Only [model] is set (the checkpoint has no optimizer state: train from it with "
                      "finetune = true).\n" +
                      model_config_toml(model_config);
  // The tokenizer beside the weights comes along (neox generate finds it).
  const fs::path hf(hf_dir);
  if (fs::is_regular_file(hf / "tokenizer.json")) {
    state.files["tokenizer.json"] = (hf / "tokenizer.json").string();
    state.config_toml += "\n[tokenizer]\ntype = \"HFTokenizer\"\nvocab_file = \"tokenizer.json\"\n";
  } else if (fs::is_regular_file(hf / "vocab.json") && fs::is_regular_file(hf / "merges.txt")) {
    state.files["vocab.json"] = (hf / "vocab.json").string();
    state.files["merges.txt"] = (hf / "merges.txt").string();
    state.config_toml +=
        "\n[tokenizer]\ntype = \"GPT2BPETokenizer\"\nvocab_file = \"vocab.json\"\nmerge_file = \"merges.txt\"\n";
  }
  const std::string dir = save_checkpoint(out, model, nullptr, state, 0);
  std::cout << "wrote " << dir << " (iteration 0, weights only, " << model_config.num_parameters()
            << " parameters) from " << hf_dir << "\n";
  return 0;
}

}  // namespace

int cmd_convert(int argc, char** argv) {
  cxxopts::Options opts(argv[0],
                        "Convert between neox checkpoints and Hugging Face GPTNeoXForCausalLM directories.\n"
                        "  --to-hf CHECKPOINT --out DIR     a checkpoint (global_step<N> or a save directory, "
                        "whose 'latest' is used) to config.json + model.safetensors (f32)\n"
                        "  --from-hf HF_DIR --out SAVE_DIR  a Hugging Face directory to SAVE_DIR/global_step0 "
                        "(iteration 0, weights only, config.toml from config.json)\n"
                        "DIR and SAVE_DIR must be new or empty.");
  opts.add_options()("to-hf", "neox checkpoint to export", cxxopts::value<std::string>())(
      "from-hf", "Hugging Face GPTNeoXForCausalLM directory to import", cxxopts::value<std::string>())(
      "out", "output directory", cxxopts::value<std::string>())(
      "bos-token-id", "bos_token_id for config.json (--to-hf; default: 256 for the byte tokenizer, else null)",
      cxxopts::value<std::int64_t>())(
      "eos-token-id", "eos_token_id for config.json (--to-hf; default: 256 for the byte tokenizer, else null)",
      cxxopts::value<std::int64_t>())("h,help", "show this help");
  add_config_options(opts, "TOML config whose [plugins] manifest chooses the backend used for the conversion", false);
  auto args = opts.parse(argc, argv);
  if (args.count("help")) {
    std::cout << opts.help() << "\n";
    return 0;
  }
  const bool to = args.count("to-hf") > 0, from = args.count("from-hf") > 0;
  if (to == from) throw Error("convert: give exactly one of --to-hf CHECKPOINT or --from-hf HF_DIR (see --help)");
  if (!args.count("out")) throw Error("convert: --out is required (see --help)");
  const Config run_config = config_from_args(args);
  return to ? to_hf(args, run_config) : from_hf(args, run_config);
}

}  // namespace neox::app
