// SPDX-License-Identifier: Apache-2.0
// neox data inspect P   : documents, items, tokens, dtype and a decoded sample
// neox data merge --input P1,P2 --output-prefix Q : concatenate datasets
// (docs/data.md). P names a Megatron indexed dataset P.bin/P.idx; "P.bin"
// or "P.idx" is accepted too.
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <sstream>

#include "cli_options.h"
#include "commands.h"
#include "neox/error.h"
#include "neox/io/indexed_dataset.h"
#include "neox/text/tokenizers.h"

namespace neox::app {

namespace {

std::string strip_extension(std::string p) {
  for (const char* ext : {".bin", ".idx"})
    if (p.size() > 4 && p.compare(p.size() - 4, 4, ext) == 0) return p.substr(0, p.size() - 4);
  return p;
}

const char* token_type(DType t) { return t == DType::u16 ? "uint16" : "int32"; }

int data_inspect(int argc, char** argv) {
  cxxopts::Options opts(argv[0],
                        "Describe an indexed dataset: documents, items, tokens, dtype, and the first tokens "
                        "of one document, decoded with the given tokenizer.");
  opts.add_options()("prefix", "dataset prefix P (P.bin/P.idx)", cxxopts::value<std::string>())(
      "document", "the document to show", cxxopts::value<std::int64_t>()->default_value("0"))(
      "max-tokens", "tokens of it to show", cxxopts::value<std::int64_t>()->default_value("64"))(
      "tokenizer-type", "tokenizer to decode the sample with (HFTokenizer, GPT2BPETokenizer, CharLevelTokenizer, byte)",
      cxxopts::value<std::string>()->default_value("byte"))("vocab-file", "tokenizer vocabulary file",
                                                            cxxopts::value<std::string>()->default_value(""))(
      "merge-file", "merges.txt (GPT2BPETokenizer)", cxxopts::value<std::string>()->default_value(""))(
      "h,help", "show this help");
  opts.parse_positional({"prefix"});
  opts.positional_help("PREFIX");
  auto args = opts.parse(argc, argv);
  if (args.count("help")) {
    std::cout << opts.help() << "\n";
    return 0;
  }
  if (!args.count("prefix")) throw Error("data inspect: give the dataset prefix (see --help)");
  const auto ds = IndexedDataset::open(strip_extension(args["prefix"].as<std::string>()));
  std::cout << "dataset: " << ds.prefix() << "\n"
            << "dtype: " << token_type(ds.dtype()) << "\n"
            << "documents: " << ds.num_documents() << "\n"
            << "items: " << ds.num_items() << "\n"
            << "tokens: " << ds.num_tokens() << "\n"
            << "largest token id: " << ds.max_token() << "\n";
  const std::int64_t d = args["document"].as<std::int64_t>();
  if (ds.num_documents() == 0) return 0;
  if (d < 0 || d >= ds.num_documents())
    throw Error("data inspect: --document " + std::to_string(d) + " is outside [0, " +
                std::to_string(ds.num_documents()) + ")");
  const std::int64_t limit = std::max<std::int64_t>(0, args["max-tokens"].as<std::int64_t>());
  std::vector<std::int32_t> ids;
  std::int64_t doc_tokens = 0;
  for (std::int64_t item = ds.doc_idx()[d]; item < ds.doc_idx()[d + 1]; ++item) {
    const std::int64_t size = ds.sizes()[item];
    doc_tokens += size;
    const std::int64_t take = std::min<std::int64_t>(size, limit - static_cast<std::int64_t>(ids.size()));
    if (take <= 0) continue;
    const std::size_t at = ids.size();
    ids.resize(at + take);
    ds.read(item, 0, take, ids.data() + at);
  }
  std::cout << "document " << d << ": " << doc_tokens << " tokens; the first " << ids.size() << ":";
  for (auto t : ids) std::cout << " " << t;
  std::cout << "\n";
  try {
    auto tok = tokenizer_from_options(args["tokenizer-type"].as<std::string>(), args["vocab-file"].as<std::string>(),
                                      args["merge-file"].as<std::string>());
    std::cout << "decoded (" << args["tokenizer-type"].as<std::string>() << "): " << tok->decode(ids) << "\n";
  } catch (const Error& e) {
    std::cout << "decoded: (cannot decode: " << e.what() << ")\n";
  }
  return 0;
}

int data_merge(int argc, char** argv) {
  cxxopts::Options opts(argv[0],
                        "Concatenate indexed datasets, in the order given, into one (documents and items "
                        "kept). The result holds uint16 tokens when every input does, int32 otherwise.");
  opts.add_options()("input", "comma-separated dataset prefixes", cxxopts::value<std::string>())(
      "output-prefix", "prefix of the merged dataset (writes Q.bin/Q.idx)", cxxopts::value<std::string>())(
      "h,help", "show this help");
  auto args = opts.parse(argc, argv);
  if (args.count("help")) {
    std::cout << opts.help() << "\n";
    return 0;
  }
  for (const char* required : {"input", "output-prefix"})
    if (!args.count(required)) throw Error(std::string("data merge: --") + required + " is required (see --help)");
  std::vector<IndexedDataset> inputs;
  std::stringstream ss(args["input"].as<std::string>());
  for (std::string p; std::getline(ss, p, ',');)
    if (!p.empty()) inputs.push_back(IndexedDataset::open(strip_extension(p)));
  if (inputs.empty()) throw Error("data merge: --input names no dataset");
  DType dtype = DType::u16;
  for (const auto& ds : inputs)
    if (ds.dtype() == DType::i32) dtype = DType::i32;
  const std::string out = strip_extension(args["output-prefix"].as<std::string>());
  IndexedDatasetWriter writer(out, dtype);
  std::int64_t docs = 0, tokens = 0;
  std::vector<std::int32_t> buf;
  for (const auto& ds : inputs) {
    for (std::int64_t d = 0; d < ds.num_documents(); ++d) {
      for (std::int64_t item = ds.doc_idx()[d]; item < ds.doc_idx()[d + 1]; ++item) {
        buf.resize(static_cast<std::size_t>(ds.sizes()[item]));
        ds.read(item, 0, ds.sizes()[item], buf.data());
        writer.add_item(buf.data(), ds.sizes()[item]);
        tokens += ds.sizes()[item];
      }
      writer.end_document();
      ++docs;
    }
  }
  writer.finish();
  std::cout << "wrote " << out << ".bin/.idx: " << inputs.size() << " datasets, " << docs << " documents, " << tokens
            << " tokens (" << token_type(dtype) << ")\n";
  return 0;
}

}  // namespace

int cmd_data(int argc, char** argv) {
  const std::string usage =
      "usage: neox data inspect PREFIX [options]\n"
      "       neox data merge --input P1,P2,... --output-prefix Q\n"
      "'neox data <subcommand> --help' describes its options.\n";
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    (argc < 2 ? std::cerr : std::cout) << usage;
    return argc < 2 ? 2 : 0;
  }
  const std::string sub = argv[1];
  std::string prog = std::string(argv[0]) + " " + sub;
  argv[1] = prog.data();
  if (sub == "inspect") return data_inspect(argc - 1, argv + 1);
  if (sub == "merge") return data_merge(argc - 1, argv + 1);
  std::cerr << "neox data: unknown subcommand '" << sub << "'\n" << usage;
  return 2;
}

}  // namespace neox::app
