// SPDX-License-Identifier: Apache-2.0
// neox score --model DIR --tokens IN.safetensors --out OUT.safetensors
#include <cstdio>
#include <iostream>
#include "cli_options.h"

#include "commands.h"
#include "neox/error.h"
#include "neox/io/hf.h"
#include "neox/io/safetensors.h"
#include "neox/model/gpt_neox.h"

namespace neox::app {

int cmd_score(int argc, char** argv) {
  cxxopts::Options opts(argv[0],
                        "Run the forward pass of a model on the int64 tensor 'input_ids' [B,T] of a safetensors "
                        "file and write 'logits' [B,T,V] (f32). When the file also holds 'labels' [B,T], print "
                        "the mean cross-entropy over all positions (labels < 0 ignored) as the last line, "
                        "'loss <value>'.");
  opts.add_options()("model", "a Hugging Face GPTNeoXForCausalLM directory", cxxopts::value<std::string>())(
      "tokens", "input safetensors file with input_ids (and labels)", cxxopts::value<std::string>())(
      "out", "output safetensors file for the logits", cxxopts::value<std::string>())("h,help", "show this help");
  add_config_options(opts, "TOML config whose [plugins] manifest chooses the backend and kernels", false);
  auto args = opts.parse(argc, argv);
  if (args.count("help")) {
    std::cout << opts.help() << "\n";
    return 0;
  }
  for (const char* required : {"model", "tokens", "out"})
    if (!args.count(required)) throw Error(std::string("score: --") + required + " is required (see --help)");
  Config config = config_from_args(args);
  auto registry = make_registry(config);
  auto backend = make_backend(*registry, config);

  const std::string dir = args["model"].as<std::string>();
  GPTNeoX model(read_hf_config(dir), backend);
  load_hf_weights(model, dir);

  const std::string tokens_path = args["tokens"].as<std::string>();
  auto tokens = SafeTensorsFile::open(tokens_path);
  if (!tokens.contains("input_ids")) throw Error(tokens_path + ": no tensor named 'input_ids'");
  Tensor ids = tokens.read("input_ids", DType::i64);
  if (ids.ndim() != 2) throw Error(tokens_path + ": input_ids must be [B, T], got " + ids.str());
  Tensor labels;
  if (tokens.contains("labels")) {
    labels = tokens.read("labels", DType::i64);
    if (labels.shape() != ids.shape())
      throw Error(tokens_path + ": labels " + labels.str() + " do not match input_ids " + ids.str());
  }

  double loss = 0.0;
  if (labels.defined())
    loss = model.forward_loss(ids, labels);
  else
    model.forward(ids);
  Tensor host = backend->to_host(model.logits());
  write_safetensors(args["out"].as<std::string>(), {{"logits", host}}, {{"format", "pt"}});
  if (labels.defined()) std::printf("loss %.10g\n", loss);
  return 0;
}

}  // namespace neox::app
