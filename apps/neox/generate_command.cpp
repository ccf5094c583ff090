// SPDX-License-Identifier: Apache-2.0
// neox generate --model CHECKPOINT_OR_HF_DIR [--prompt TEXT | --prompt-ids IDS |
//               --input FILE [--output FILE] | --interactive] [sampling options]
// (docs/generation.md).
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>
#include "cli_options.h"

#include "commands.h"
#include "neox/error.h"
#include "neox/io/hf.h"
#include "neox/model/generation.h"
#include "neox/model/gpt_neox.h"
#include "neox/text/byte_tokenizer.h"
#include "neox/text/tokenizers.h"
#include "neox/tokenizer.h"
#include "neox/train/checkpoint.h"

namespace fs = std::filesystem;

namespace neox::app {
namespace {

// A model from a Hugging Face directory or a neox checkpoint, with what its
// files say about tokens.
struct LoadedModel {
  std::unique_ptr<GPTNeoX> model;
  TokenizerConfig tokenizer;           // a checkpoint config's [tokenizer] (type "" if none)
  Options tokenizer_options;           // and its [plugins.options.<type>] (a tokenizer plugin's)
  std::string config_path;             // the checkpoint's config.toml
  std::optional<std::int32_t> eos_id;  // config.json's eos_token_id
  std::string hf_dir;                  // the Hugging Face directory ("" for a checkpoint)
};

LoadedModel load_model(const std::string& path, const std::shared_ptr<Backend>& backend) {
  LoadedModel m;
  if (fs::exists(fs::path(path) / "config.json")) {  // a Hugging Face directory
    m.model = std::make_unique<GPTNeoX>(read_hf_config(path), backend);
    load_hf_weights(*m.model, path);
    std::ifstream in(fs::path(path) / "config.json");
    auto j = nlohmann::json::parse(in, nullptr, false);
    if (j.is_object() && j.contains("eos_token_id") && j["eos_token_id"].is_number_integer())
      m.eos_id = j["eos_token_id"].get<std::int32_t>();
    m.hf_dir = path;
    return m;
  }
  const std::string checkpoint = resolve_checkpoint(path);
  const Config saved =
      parse_config(read_checkpoint_config(checkpoint), (fs::path(checkpoint) / "config.toml").string());
  m.model = std::make_unique<GPTNeoX>(saved.model, backend);
  load_checkpoint(checkpoint, *m.model, nullptr);
  m.tokenizer = saved.tokenizer;
  m.tokenizer_options = saved.plugins.options_for(saved.tokenizer.type);
  m.config_path = saved.path;
  return m;
}

// The tokenizer for text in and out, or null for token ids only. `requested`
// is --tokenizer: auto (a Hugging Face directory's tokenizer.json, or its
// vocab.json + merges.txt; a checkpoint's [tokenizer], a built-in type or a
// tokenizer plugin, whose files the checkpoint holds; else the byte
// tokenizer when the model's vocab_size is 257), byte, none, or the path of
// a tokenizer.json (docs/tokenizers.md).
std::shared_ptr<const Tokenizer> make_tokenizer(const std::string& requested, const LoadedModel& m,
                                                PluginRegistry& registry) {
  const ModelConfig& cfg = m.model->config();
  if (requested == "none") return nullptr;
  std::shared_ptr<const Tokenizer> t;
  const fs::path dir(m.hf_dir);
  if (requested == "byte") {
    t = std::make_unique<ByteTokenizer>();
  } else if (requested != "auto") {
    if (!fs::is_regular_file(requested))
      throw Error("--tokenizer " + requested + ": expected auto, byte, none or a tokenizer.json file");
    t = neox::make_tokenizer("HFTokenizer", requested, "");
  } else if (!m.hf_dir.empty() && fs::is_regular_file(dir / "tokenizer.json")) {
    t = neox::make_tokenizer("HFTokenizer", (dir / "tokenizer.json").string(), "");
  } else if (!m.hf_dir.empty() && fs::is_regular_file(dir / "vocab.json") && fs::is_regular_file(dir / "merges.txt")) {
    t = neox::make_tokenizer("GPT2BPETokenizer", (dir / "vocab.json").string(), (dir / "merges.txt").string());
  } else if (!m.tokenizer.type.empty()) {  // the checkpoint's [tokenizer], files in the checkpoint
    t = neox::make_tokenizer(m.tokenizer, m.config_path, &registry, m.tokenizer_options);
  } else if (cfg.vocab_size == 257) {
    return std::make_unique<ByteTokenizer>();
  } else {
    return nullptr;
  }
  if (cfg.padded_vocab_size() < t->vocab_size())
    throw Error("--tokenizer " + requested + ": the model's vocabulary (" + std::to_string(cfg.padded_vocab_size()) +
                ") is smaller than the " + t->name() + " tokenizer's (" + std::to_string(t->vocab_size()) + ")");
  return t;
}

std::vector<std::int32_t> parse_ids(const std::string& text, const std::string& what) {
  std::vector<std::int32_t> ids;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find(',', pos);
    if (end == std::string::npos) end = text.size();
    std::string item = text.substr(pos, end - pos);
    const auto first = item.find_first_not_of(" \t"), last = item.find_last_not_of(" \t");
    item = first == std::string::npos ? "" : item.substr(first, last - first + 1);
    std::size_t used = 0;
    long long v = -1;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (item.empty() || used != item.size() || v < 0 || v > INT32_MAX)
      throw Error(what + ": '" + item + "' is not a token id (expected comma-separated ids such as 1,2,3)");
    ids.push_back(static_cast<std::int32_t>(v));
    pos = end + 1;
  }
  if (ids.empty()) throw Error(what + ": no token ids");
  return ids;
}

std::string join_ids(const std::vector<std::int32_t>& ids) {
  std::string s;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(ids[i]);
  }
  return s;
}

struct Session {
  GPTNeoX* model = nullptr;
  const Tokenizer* tokenizer = nullptr;
  GenerationSettings settings;
  std::int64_t num_samples = 1;
  std::int64_t tokens_generated = 0;

  // The prompt of a text (the end-of-document token for an empty one).
  std::vector<std::int32_t> encode(const std::string& text) const {
    if (!tokenizer)
      throw Error("this model has no built-in tokenizer (vocab_size " + std::to_string(model->config().vocab_size) +
                  "): give token ids (--prompt-ids, or ids per line with --input), or --tokenizer byte");
    if (text.empty()) return unconditional();
    return tokenizer->encode(text);
  }
  std::vector<std::int32_t> unconditional() const {
    if (settings.eod_id < 0)
      throw Error(
          "an unconditional sample starts from the end-of-document token, which this model does not "
          "name: give --eod-id");
    return {settings.eod_id};
  }

  // num_samples continuations of `prompt`; with as_text, printed as text.
  // One sample is streamed token by token; several are printed when done.
  std::vector<GeneratedSequence> run(const std::vector<std::int32_t>& prompt, bool as_text, bool print) {
    std::vector<std::vector<std::int32_t>> prompts(static_cast<std::size_t>(num_samples), prompt);
    const bool stream = print && num_samples == 1;
    bool first = true;
    TokenCallback on_token;
    if (stream)
      on_token = [&](std::size_t, std::int32_t token) {
        std::string out;
        if (as_text) {
          out = tokenizer->decode({token});
        } else {
          if (!first) out += ',';
          out += std::to_string(token);
        }
        std::fwrite(out.data(), 1, out.size(), stdout);
        std::fflush(stdout);
        first = false;
      };
    auto results = generate(*model, prompts, settings, on_token);
    for (const auto& r : results) tokens_generated += static_cast<std::int64_t>(r.tokens.size());
    if (!print) return results;
    if (stream) {
      std::printf("\n");
    } else {
      for (std::size_t i = 0; i < results.size(); ++i) {
        if (as_text)
          std::printf("--- sample %zu ---\n%s\n", i, tokenizer->decode(results[i].tokens).c_str());
        else
          std::printf("%s\n", join_ids(results[i].tokens).c_str());
      }
    }
    std::fflush(stdout);
    return results;
  }
};

int run_files(Session& s, const std::string& input, std::string output) {
  if (output.empty()) output = input + ".output.jsonl";  // GPT-NeoX's default
  std::ifstream in(input);
  if (!in) throw Error(input + ": cannot open");
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    const auto first = line.find_first_not_of(" \t\r"), last = line.find_last_not_of(" \t\r");
    if (first == std::string::npos) continue;  // empty lines are skipped, as in GPT-NeoX
    lines.push_back(line.substr(first, last - first + 1));
  }
  std::ofstream out(output);
  if (!out) throw Error(output + ": cannot write");
  for (std::size_t n = 0; n < lines.size(); ++n) {
    const std::string where = input + ":" + std::to_string(n + 1);
    std::vector<std::int32_t> prompt;
    try {
      prompt = s.tokenizer ? s.encode(lines[n]) : parse_ids(lines[n], where);
    } catch (const Error& e) {
      throw Error(where + ": " + e.what());
    }
    for (const auto& r : s.run(prompt, s.tokenizer != nullptr, false)) {
      nlohmann::json j;
      j["context"] = lines[n];
      j["text"] = s.tokenizer ? nlohmann::json(s.tokenizer->decode(r.tokens)) : nlohmann::json(nullptr);
      j["tokens"] = r.tokens;
      j["length"] = r.tokens.size();
      j["finished"] = r.finished;
      // Byte-level text need not be valid UTF-8: invalid bytes become U+FFFD.
      out << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    }
  }
  out.close();
  if (!out) throw Error(output + ": write failed");
  std::fprintf(stderr, "wrote %zu samples of %zu prompts to %s\n",
               lines.size() * static_cast<std::size_t>(s.num_samples), lines.size(), output.c_str());
  return 0;
}

int run_interactive(Session& s) {
  std::string line;
  while (true) {
    std::fprintf(stderr, "Context prompt >>> ");
    std::fflush(stderr);
    if (!std::getline(std::cin, line)) break;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    try {
      if (s.tokenizer) {
        s.run(s.encode(line), true, true);
      } else {
        s.run(line.empty() ? s.unconditional() : parse_ids(line, "prompt"), false, true);
      }
    } catch (const Error& e) {  // a bad prompt does not end the session
      std::fprintf(stderr, "error: %s\n", e.what());
    }
  }
  std::fprintf(stderr, "\n");
  return 0;
}

}  // namespace

int cmd_generate(int argc, char** argv) {
  cxxopts::Options opts(argv[0],
                        "Generate text with a model's key/value cache, with GPT-NeoX's sampling (temperature, then "
                        "top-k, then top-p). Without a prompt, unconditional samples start from the "
                        "end-of-document token. See docs/generation.md.");
  opts.add_options()("model", "a neox checkpoint (save directory or global_step dir) or a Hugging Face directory",
                     cxxopts::value<std::string>())(
      "prompt", "prompt text (needs a tokenizer); the continuation is streamed", cxxopts::value<std::string>())(
      "prompt-ids", "prompt as comma-separated token ids, e.g. 1,2,3; prints the new ids",
      cxxopts::value<std::string>())("input", "file with one prompt per line (text, or ids without a tokenizer)",
                                     cxxopts::value<std::string>())(
      "output", "JSON lines written for --input (default: INPUT.output.jsonl)",
      cxxopts::value<std::string>()->default_value(""))("interactive", "read a prompt per line from stdin until EOF")(
      "max-new-tokens", "tokens to generate per sample at most", cxxopts::value<std::int64_t>()->default_value("64"))(
      "temperature", "divides the logits; 0 is greedy", cxxopts::value<double>()->default_value("1.0"))(
      "top-k", "keep the k most likely tokens (0: all)", cxxopts::value<std::int64_t>()->default_value("0"))(
      "top-p", "nucleus sampling threshold (0: off)", cxxopts::value<double>()->default_value("0.0"))(
      "greedy", "always take the most likely token")("seed", "random seed of the samples",
                                                     cxxopts::value<std::uint64_t>()->default_value("1234"))(
      "num-samples", "samples per prompt", cxxopts::value<std::int64_t>()->default_value("1"))(
      "eod-id", "end-of-document (stop) token; default: the tokenizer's, else config.json's eos_token_id; -1: none",
      cxxopts::value<std::int32_t>())("max-length",
                                      "positions per sample at most, prompt included (0: the model's seq_length)",
                                      cxxopts::value<std::int64_t>()->default_value("0"))(
      "tokenizer", "auto, byte (the built-in byte tokenizer), none (token ids only) or a tokenizer.json file",
      cxxopts::value<std::string>()->default_value("auto"))("h,help", "show this help");
  add_config_options(opts, "TOML config whose [plugins] manifest chooses the backend and kernels", false);
  auto args = opts.parse(argc, argv);
  if (args.count("help")) {
    std::cout << opts.help() << "\n";
    return 0;
  }
  if (!args.count("model")) throw Error("generate: --model is required (see --help)");
  // stdout carries the samples only: log messages go to stderr.
  if (!spdlog::get("generate")) {
    auto log = spdlog::stderr_color_mt("generate");
    log->set_level(spdlog::default_logger()->level());
    spdlog::set_default_logger(log);
  }
  int sources = 0;
  for (const char* o : {"prompt", "prompt-ids", "input", "interactive"}) sources += args.count(o) ? 1 : 0;
  if (sources > 1) throw Error("generate: give at most one of --prompt, --prompt-ids, --input, --interactive");
  if (args["output"].as<std::string>().size() && !args.count("input"))
    throw Error("generate: --output goes with --input");
  const std::int64_t num_samples = args["num-samples"].as<std::int64_t>();
  if (num_samples < 1) throw Error("generate: --num-samples must be at least 1");

  Config config = config_from_args(args);
  auto registry = make_registry(config);
  auto backend = make_backend(*registry, config);
  LoadedModel loaded = load_model(args["model"].as<std::string>(), backend);
  auto tokenizer = make_tokenizer(args["tokenizer"].as<std::string>(), loaded, *registry);

  Session s;
  s.model = loaded.model.get();
  s.tokenizer = tokenizer.get();
  s.num_samples = num_samples;
  GenerationSettings& g = s.settings;
  g.max_new_tokens = args["max-new-tokens"].as<std::int64_t>();
  g.temperature = args["temperature"].as<double>();
  g.top_k = args["top-k"].as<std::int64_t>();
  g.top_p = args["top-p"].as<double>();
  g.greedy = args.count("greedy") > 0;
  g.seed = args["seed"].as<std::uint64_t>();
  g.max_length = args["max-length"].as<std::int64_t>();
  if (args.count("eod-id"))
    g.eod_id = args["eod-id"].as<std::int32_t>();
  else if (tokenizer)
    g.eod_id = tokenizer->eod_id();
  else if (loaded.eos_id && *loaded.eos_id >= 0 && *loaded.eos_id < loaded.model->config().vocab_size)
    g.eod_id = *loaded.eos_id;

  // With a tokenizer, sampling never leaves its vocabulary (the model's may
  // be padded beyond it, as a Hugging Face export's is).
  if (tokenizer) g.vocab_size = std::min(tokenizer->vocab_size(), loaded.model->config().vocab_size);

  if (args.count("input")) return run_files(s, args["input"].as<std::string>(), args["output"].as<std::string>());
  if (args.count("interactive")) return run_interactive(s);

  const auto start = std::chrono::steady_clock::now();
  if (args.count("prompt-ids")) {
    s.run(parse_ids(args["prompt-ids"].as<std::string>(), "--prompt-ids"), false, true);
  } else if (args.count("prompt")) {
    s.run(s.encode(args["prompt"].as<std::string>()), true, true);
  } else {
    s.run(s.unconditional(), tokenizer != nullptr, true);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::fprintf(stderr, "generated %lld tokens in %.3f s (%.1f tokens/s)\n", static_cast<long long>(s.tokens_generated),
               seconds, seconds > 0 ? static_cast<double>(s.tokens_generated) / seconds : 0.0);
  return 0;
}

}  // namespace neox::app
