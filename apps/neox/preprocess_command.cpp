// SPDX-License-Identifier: Apache-2.0
// neox preprocess --input a.txt,b.txt --output-prefix P [--append-eod]
// Plain-text files to a Megatron indexed dataset with the byte tokenizer,
// one document per file. (BPE tokenizers and jsonl input come later.)
#include "cli_options.h"
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "commands.h"
#include "neox/byte_tokenizer.h"
#include "neox/error.h"
#include "neox/indexed_dataset.h"

namespace neox::app {

namespace {
std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}
}  // namespace

int cmd_preprocess(int argc, char** argv) {
  cxxopts::Options opts(argv[0],
                        "Tokenize plain-text files into PREFIX_text_document.bin/.idx (Megatron's indexed format, "
                        "readable by GPT-NeoX and the mmap data plugin). Each file is one document. A directory "
                        "stands for the regular files in it, in name order.");
  opts.add_options()("input", "comma-separated text files or directories", cxxopts::value<std::string>())(
      "output-prefix", "output prefix P (writes P_text_document.bin/.idx)", cxxopts::value<std::string>())(
      "tokenizer-type", "tokenizer: byte (256 bytes + end-of-document 256)",
      cxxopts::value<std::string>()->default_value("byte"))(
      "append-eod", "append the end-of-document token to every document")("h,help", "show this help");
  auto args = opts.parse(argc, argv);
  if (args.count("help")) {
    std::cout << opts.help() << "\n";
    return 0;
  }
  for (const char* required : {"input", "output-prefix"})
    if (!args.count(required)) throw Error(std::string("preprocess: --") + required + " is required (see --help)");
  if (args["tokenizer-type"].as<std::string>() != "byte")
    throw Error("preprocess: --tokenizer-type " + args["tokenizer-type"].as<std::string>() +
                " is not available yet (only byte)");

  std::vector<std::filesystem::path> files;
  for (const auto& in : split_list(args["input"].as<std::string>())) {
    std::filesystem::path p(in);
    if (std::filesystem::is_directory(p)) {
      std::vector<std::filesystem::path> found;
      for (const auto& e : std::filesystem::directory_iterator(p))
        if (e.is_regular_file()) found.push_back(e.path());
      std::sort(found.begin(), found.end());
      files.insert(files.end(), found.begin(), found.end());
    } else if (std::filesystem::is_regular_file(p)) {
      files.push_back(p);
    } else {
      throw Error("preprocess: " + in + ": no such file or directory");
    }
  }
  if (files.empty()) throw Error("preprocess: no input files");

  ByteTokenizer tokenizer;
  const std::string prefix = args["output-prefix"].as<std::string>() + "_text_document";
  IndexedDatasetWriter writer(prefix, best_token_dtype(tokenizer.vocab_size()));
  std::int64_t tokens = 0;
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    if (!in) throw Error(f.string() + ": cannot open");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto ids = tokenizer.encode(text);
    if (args.count("append-eod")) ids.push_back(tokenizer.eod_id());
    if (ids.empty()) continue;
    writer.add_item(ids.data(), static_cast<std::int64_t>(ids.size()));
    writer.end_document();
    tokens += static_cast<std::int64_t>(ids.size());
  }
  writer.finish();
  std::cout << "wrote " << prefix << ".bin/.idx: " << files.size() << " documents, " << tokens << " tokens\n";
  return 0;
}

}  // namespace neox::app
