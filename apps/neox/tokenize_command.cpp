// SPDX-License-Identifier: Apache-2.0
// neox tokenize --tokenizer-type TYPE [--vocab-file F] [--merge-file F]
//               (--text TEXT | --ids IDS | --input FILE [--jsonl | --lines]) [--decode]
//               [--output FILE] [--threads N] [--stats]
// Encodes text to token ids or decodes ids to text (docs/tokenizers.md).
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cli_options.h"
#include "commands.h"
#include "neox/error.h"
#include "neox/text/bpe_tokenizer.h"
#include "neox/text/tokenizers.h"

namespace neox::app {
namespace {

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("tokenize: " + path + ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The lines of `text`, without their "\n" (a last line without one counts).
std::vector<std::string_view> split_lines(std::string_view text) {
  std::vector<std::string_view> lines;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    lines.push_back(text.substr(pos, end - pos));
    pos = end + 1;
  }
  return lines;
}

// Token ids separated by spaces, commas, or written as a JSON list.
std::vector<std::int32_t> parse_ids(std::string_view s, const std::string& where) {
  std::vector<std::int32_t> ids;
  std::size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (c == ' ' || c == ',' || c == '\t' || c == '\r' || c == '\n' || c == '[' || c == ']') {
      ++i;
      continue;
    }
    std::size_t end = i;
    if (s[end] == '-') ++end;
    while (end < s.size() && s[end] >= '0' && s[end] <= '9') ++end;
    if (end == i || (end == i + 1 && s[i] == '-'))
      throw Error("tokenize: " + where + ": \"" + std::string(s.substr(i, 20)) + "\" is not a token id");
    const long long v = std::stoll(std::string(s.substr(i, end - i)));
    if (v < INT32_MIN || v > INT32_MAX)
      throw Error("tokenize: " + where + ": token id " + std::to_string(v) + " is out of range");
    ids.push_back(static_cast<std::int32_t>(v));
    i = end;
  }
  return ids;
}

std::string ids_line(const std::vector<std::int32_t>& ids) {
  std::string line;
  line.reserve(ids.size() * 6);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (i) line.push_back(' ');
    line += std::to_string(ids[i]);
  }
  line.push_back('\n');
  return line;
}

}  // namespace

int cmd_tokenize(int argc, char** argv) {
  cxxopts::Options opts(
      argv[0],
      "Encode text to token ids, or decode ids to text. Ids are written as one line per document, separated by "
      "spaces; decoded text is written as it is (with --jsonl or --lines: one JSON string per line).");
  opts.add_options()("tokenizer-type", "HFTokenizer, GPT2BPETokenizer, CharLevelTokenizer or byte",
                     cxxopts::value<std::string>())(
      "vocab-file", "HFTokenizer: tokenizer.json; GPT2BPETokenizer: vocab.json", cxxopts::value<std::string>())(
      "merge-file", "GPT2BPETokenizer: merges.txt", cxxopts::value<std::string>())(
      "text", "encode this text (or decode it as ids with --decode)", cxxopts::value<std::string>())(
      "ids", "decode these ids (\"1 2 3\", \"1,2,3\" or \"[1, 2, 3]\")", cxxopts::value<std::string>())(
      "input", "a file: one document (default), one per line (--lines) or JSON lines (--jsonl)",
      cxxopts::value<std::string>())("jsonl", "--input holds JSON lines; encode the --json-key of each")(
      "json-key", "the text key of --jsonl lines", cxxopts::value<std::string>()->default_value("text"))(
      "lines", "--input holds one document per line")(
      "decode", "the input holds ids (per line with --input) to decode into text")(
      "skip-special-tokens", "decode: leave special tokens out (BPE tokenizers)")(
      "output", "write here instead of standard output", cxxopts::value<std::string>())(
      "threads", "encoding threads (0: one per hardware thread)", cxxopts::value<int>()->default_value("0"))(
      "stats", "print the documents, bytes, tokens and encoding speed (MB/s) to standard error")("h,help",
                                                                                                 "show this help");
  auto args = opts.parse(argc, argv);
  if (args.count("help")) {
    std::cout << opts.help() << "\n";
    return 0;
  }
  if (!args.count("tokenizer-type")) throw Error("tokenize: --tokenizer-type is required (see --help)");
  int sources = 0;
  for (const char* o : {"text", "ids", "input"}) sources += args.count(o) ? 1 : 0;
  if (sources != 1) throw Error("tokenize: give exactly one of --text, --ids, --input");
  if (args.count("jsonl") && args.count("lines")) throw Error("tokenize: give at most one of --jsonl, --lines");
  if ((args.count("jsonl") || args.count("lines")) && !args.count("input"))
    throw Error("tokenize: --jsonl and --lines go with --input");
  const bool decode = args.count("decode") || args.count("ids");
  const int threads = args["threads"].as<int>();
  if (threads < 0) throw Error("tokenize: --threads must be 0 (automatic) or more");

  const auto load_start = std::chrono::steady_clock::now();
  auto tokenizer = tokenizer_from_options(args["tokenizer-type"].as<std::string>(),
                                          args.count("vocab-file") ? args["vocab-file"].as<std::string>() : "",
                                          args.count("merge-file") ? args["merge-file"].as<std::string>() : "");
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();

  // The documents.
  std::string input;
  std::vector<std::string> json_texts;  // owns the texts of --jsonl lines
  std::vector<std::string_view> docs;
  std::string source = "--text";
  if (args.count("text")) {
    input = args["text"].as<std::string>();
    docs.push_back(input);
  } else if (args.count("ids")) {
    input = args["ids"].as<std::string>();
    docs.push_back(input);
    source = "--ids";
  } else {
    source = args["input"].as<std::string>();
    input = read_all(source);
    if (args.count("jsonl")) {
      const std::string key = args["json-key"].as<std::string>();
      std::size_t line_no = 0;
      for (std::string_view line : split_lines(input)) {
        ++line_no;
        if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
        const std::string where = source + ":" + std::to_string(line_no);
        auto j = nlohmann::json::parse(line, nullptr, false);
        if (j.is_discarded()) throw Error("tokenize: " + where + ": not valid JSON");
        if (decode) {
          if (!j.is_array()) throw Error("tokenize: " + where + ": --decode --jsonl expects a JSON list of ids");
          json_texts.push_back(std::string(line));
        } else {
          if (!j.is_object() || !j.contains(key) || !j[key].is_string())
            throw Error("tokenize: " + where + ": no string \"" + key + "\" (see --json-key)");
          json_texts.push_back(j[key].get<std::string>());
        }
      }
      for (const auto& t : json_texts) docs.push_back(t);
    } else if (args.count("lines")) {
      docs = split_lines(input);
    } else {
      docs.push_back(input);
    }
  }

  std::ofstream file;
  if (args.count("output")) {
    file.open(args["output"].as<std::string>(), std::ios::binary);
    if (!file) throw Error("tokenize: " + args["output"].as<std::string>() + ": cannot write");
  }
  std::ostream& out = args.count("output") ? static_cast<std::ostream&>(file) : std::cout;

  if (decode) {
    const bool skip = args.count("skip-special-tokens") > 0;
    const auto* bpe = dynamic_cast<const BpeTokenizer*>(tokenizer.get());
    const bool per_line = args.count("jsonl") || args.count("lines");
    for (std::size_t i = 0; i < docs.size(); ++i) {
      const auto ids = parse_ids(docs[i], source + (args.count("input") ? ":" + std::to_string(i + 1) : ""));
      const std::string text = bpe ? bpe->decode(ids, skip) : tokenizer->decode(ids);
      if (per_line) {
        out << nlohmann::json(text).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
      } else {
        out << text << (args.count("input") ? "" : "\n");
      }
    }
    return 0;
  }

  const auto start = std::chrono::steady_clock::now();
  const std::clock_t cpu_start = std::clock();
  const auto encoded = encode_batch(*tokenizer, docs, threads);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double cpu_seconds = static_cast<double>(std::clock() - cpu_start) / CLOCKS_PER_SEC;
  std::size_t bytes = 0, tokens = 0;
  for (std::size_t i = 0; i < docs.size(); ++i) {
    bytes += docs[i].size();
    tokens += encoded[i].size();
    out << ids_line(encoded[i]);
  }
  out.flush();
  if (!out) throw Error("tokenize: writing the ids failed");
  if (args.count("stats")) {
    const int used = threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    std::fprintf(stderr,
                 "tokenize: %s: %zu documents, %zu bytes, %zu tokens in %.4f s = %.2f MB/s on %d threads "
                 "(CPU time %.4f s; tokenizer loaded in %.3f s)\n",
                 tokenizer->name().c_str(), docs.size(), bytes, tokens, seconds,
                 seconds > 0 ? static_cast<double>(bytes) / seconds / 1e6 : 0.0, used, cpu_seconds, load_s);
  }
  return 0;
}

}  // namespace neox::app
