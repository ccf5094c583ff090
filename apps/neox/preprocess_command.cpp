// SPDX-License-Identifier: Apache-2.0
// neox preprocess --input a.jsonl,b.jsonl.zst,c.txt --jsonl-keys text
//   --tokenizer-type T [--vocab-file V] [--merge-file M] [--append-eod]
//   --output-prefix P [--workers N] [--skip-malformed]
// The flags of GPT-NeoX's tools/datasets/preprocess_data.py. jsonl files
// (plain, gzip or zstd) hold one JSON object per line; every other file is
// one plain-text document. Writes one Megatron indexed dataset per key,
// P_<key>_document.bin/.idx (docs/data.md).
//
// Streaming: a reader thread reads the next chunk of lines (at most
// kChunkLines lines or kChunkBytes bytes) while `--workers` threads parse
// and tokenize the current one and the main thread appends it in order, so
// memory is bounded by two chunks plus the index (12 bytes per document).
// A plain-text file is read the same way, in pieces of at most kPieceBytes
// cut just before a "\n" that the tokenizer says a text may be cut at
// (Tokenizer::can_split_before_newline: for byte-level BPE, a "\n"
// followed by a letter or a number): the pieces' ids, concatenated, are the
// ids of the whole text, written as one item. A window of kPieceBytes with
// no such "\n" makes the piece grow until one comes (or the file ends):
// correctness over memory. A tokenizer that cannot be cut reads the file whole.
#include <sys/resource.h>
#include <unistd.h>

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <future>
#include <iostream>
#include <mutex>
#include <sstream>
#include <thread>

#include "cli_options.h"
#include "commands.h"
#include "neox/error.h"
#include "neox/io/indexed_dataset.h"
#include "neox/io/line_reader.h"
#include "neox/text/tokenizers.h"

namespace neox::app {

namespace {

constexpr std::size_t kChunkLines = 4096;
constexpr std::size_t kChunkBytes = 8u << 20;
constexpr std::size_t kPieceBytes = 1u << 20;

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// jsonl when the name, less a .gz/.zst suffix, ends in .jsonl or .json.
bool is_jsonl(const std::filesystem::path& p) {
  std::string name = p.filename().string();
  for (const char* z : {".gz", ".gzip", ".zst", ".zstd"})
    if (ends_with(name, z)) name.resize(name.size() - std::strlen(z));
  return ends_with(name, ".jsonl") || ends_with(name, ".json");
}

// One document to tokenize: a jsonl line, or a piece of a plain-text file
// (the whole file when it cannot be cut).
struct Record {
  std::size_t file = 0;
  std::int64_t line = 0;    // 0 for a plain-text file
  std::int64_t offset = 0;  // plain text: where the piece starts in the (decompressed) text
  bool last = true;         // plain text: the last piece of the file
  std::string text;
};

struct Encoded {
  std::string error;                           // "FILE:LINE: ..." for a malformed line
  std::vector<std::vector<std::int32_t>> ids;  // one per key
};

// Reads the inputs one chunk at a time.
class ChunkReader {
 public:
  ChunkReader(const std::vector<std::filesystem::path>& files, const Tokenizer& tok) : files_(files), tok_(tok) {
    for (char32_t c = 0; c < 0x80; ++c) ascii_cut_[c] = tok.can_split_before_newline(c);
    streaming_ = std::any_of(ascii_cut_.begin(), ascii_cut_.end(), [](bool b) { return b; });
  }

  // The next chunk; empty at the end of the inputs.
  std::vector<Record> next() {
    std::vector<Record> chunk;
    std::size_t bytes = 0;
    while (chunk.size() < kChunkLines && bytes < kChunkBytes) {
      if (!reader_) {
        if (next_file_ == files_.size()) break;
        current_ = next_file_++;
        reader_ = std::make_unique<LineReader>(files_[current_].string());
        jsonl_ = is_jsonl(files_[current_]);
        text_offset_ = 0;
        carry_.clear();
      }
      Record r;
      r.file = current_;
      if (!jsonl_) {
        r.offset = text_offset_;
        r.last = next_piece(r.text);
        text_offset_ += static_cast<std::int64_t>(r.text.size());
        bytes_ += static_cast<std::int64_t>(r.text.size());
        ++pieces_;
        if (r.last) {
          ++text_files_;
          finish_file();
        }
      } else if (reader_->next_line(r.text)) {
        r.line = reader_->line_number();
        bytes_ += static_cast<std::int64_t>(r.text.size()) + 1;
        if (r.text.find_first_not_of(" \t") == std::string::npos) continue;  // blank line
      } else {
        finish_file();
        continue;
      }
      bytes += r.text.size();
      chunk.push_back(std::move(r));
    }
    return chunk;
  }
  // Uncompressed bytes read so far.
  std::int64_t bytes() const { return bytes_; }
  std::size_t files_done() const { return files_done_; }
  // Whether plain-text files are read in pieces (the tokenizer allows it).
  bool streaming() const { return streaming_; }
  // Plain-text files read, and the pieces they were read in (after the last chunk).
  std::int64_t text_files() const { return text_files_; }
  std::int64_t pieces() const { return pieces_; }

 private:
  void finish_file() {
    reader_.reset();
    ++files_done_;
  }

  // The next piece of the current plain-text file into `piece`; true when it
  // is the file's last.
  bool next_piece(std::string& piece) {
    if (!streaming_) {
      piece = reader_->read_all();
      return true;
    }
    piece.swap(carry_);
    carry_.clear();
    std::size_t target = kPieceBytes, from = 1;  // cuts before `from` are known to be none
    for (;;) {
      while (piece.size() < target)
        if (reader_->read_some(piece, target - piece.size()) == 0) return true;  // the rest of the file
      const std::size_t cut = last_cut(piece, from);
      if (cut != std::string::npos) {
        carry_.assign(piece, cut, std::string::npos);
        piece.resize(cut);
        return false;
      }
      // No place to cut in this window (one huge line, or no line starting
      // with a letter or number): the piece grows, up to the whole file if
      // need be, since only such a cut gives the ids of the whole text.
      // The last 4 bytes are searched again (their next character may have
      // been incomplete).
      from = std::max<std::size_t>(piece.size(), 5) - 4;
      target = piece.size() + kPieceBytes;
    }
  }

  // The last position q >= from of `s` where s may be cut: s[q] is "\n" and
  // the character after it, complete in `s`, is one the tokenizer accepts.
  std::size_t last_cut(const std::string& s, std::size_t from) const {
    std::size_t end = s.size();
    while (end > from) {
      const void* p = ::memrchr(s.data() + from, '\n', end - from);
      if (!p) break;
      const std::size_t q = static_cast<std::size_t>(static_cast<const char*>(p) - s.data());
      if (cut_before(s, q + 1)) return q;
      end = q;
    }
    return std::string::npos;
  }

  // Whether the well-formed UTF-8 character at s[i] may follow a cut "\n".
  bool cut_before(const std::string& s, std::size_t i) const {
    if (i >= s.size()) return false;
    const auto b0 = static_cast<unsigned char>(s[i]);
    if (b0 < 0x80) return ascii_cut_[b0];
    std::size_t len = 0;
    char32_t cp = 0, min = 0;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
      len = 2, cp = b0 & 0x1F, min = 0x80;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
      len = 3, cp = b0 & 0x0F, min = 0x800;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
      len = 4, cp = b0 & 0x07, min = 0x10000;
    } else {
      return false;
    }
    if (i + len > s.size()) return false;
    for (std::size_t k = 1; k < len; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      if ((b & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (b & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    return tok_.can_split_before_newline(cp);
  }

  const std::vector<std::filesystem::path>& files_;
  const Tokenizer& tok_;
  std::array<bool, 0x80> ascii_cut_{};
  bool streaming_ = false;
  std::size_t next_file_ = 0, current_ = 0;
  std::atomic<std::size_t> files_done_{0};
  std::unique_ptr<LineReader> reader_;
  bool jsonl_ = false;
  std::string carry_;             // plain text read past the last cut
  std::int64_t text_offset_ = 0;  // where the next piece starts
  std::atomic<std::int64_t> bytes_{0};
  std::int64_t text_files_ = 0, pieces_ = 0;
};

Encoded encode_record(const Record& r, const std::vector<std::filesystem::path>& files,
                      const std::vector<std::string>& keys, const Tokenizer& tok, bool append_eod) {
  Encoded e;
  e.ids.resize(keys.size());
  const std::string where = files[r.file].string() + (r.line ? ":" + std::to_string(r.line) : std::string());
  try {
    if (r.line == 0) {  // a piece of a plain-text file: (part of) a document of the first key
      try {
        e.ids[0] = tok.encode(r.text);
      } catch (const Error& ex) {
        e.error = where + ": cannot tokenize" +
                  (r.offset || !r.last ? " (the piece from byte " + std::to_string(r.offset) + " of the text)"
                                       : std::string()) +
                  ": " + ex.what();
        return e;
      }
      if (append_eod && r.last) e.ids[0].push_back(tok.eod_id());
      return e;
    }
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(r.text);
    } catch (const nlohmann::json::exception& ex) {
      std::string msg = ex.what();
      // nlohmann's "[json.exception.parse_error.101] parse error at line 1, column 5: ..."
      // (each jsonl line is parsed alone: its "line 1" is the file's line r.line).
      if (auto p = msg.find("] "); p != std::string::npos) msg = msg.substr(p + 2);
      if (auto p = msg.find("at line 1, column "); p != std::string::npos) msg.replace(p, 18, "at column ");
      e.error = where + ": invalid JSON: " + msg;
      return e;
    }
    if (!j.is_object()) {
      e.error = where + ": expected a JSON object, found " + std::string(j.type_name());
      return e;
    }
    for (std::size_t k = 0; k < keys.size(); ++k) {
      auto it = j.find(keys[k]);
      if (it == j.end()) {
        e.error = where + ": no key \"" + keys[k] + "\" (choose the keys with --jsonl-keys)";
        return e;
      }
      if (!it->is_string()) {
        e.error = where + ": key \"" + keys[k] + "\" is a " + it->type_name() + ", not a string";
        return e;
      }
      e.ids[k] = tok.encode(it->get_ref<const std::string&>());
      if (append_eod) e.ids[k].push_back(tok.eod_id());
    }
  } catch (const Error& ex) {
    e.error = where + ": cannot tokenize: " + ex.what();
  }
  return e;
}

// Peak resident memory of this process in MiB (ru_maxrss is in KiB on Linux).
double peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}

}  // namespace

int cmd_preprocess(int argc, char** argv) {
  cxxopts::Options opts(argv[0],
                        "Tokenize jsonl and plain-text files into Megatron indexed datasets "
                        "PREFIX_<key>_document.bin/.idx, readable by GPT-NeoX, Megatron-LM and the mmap data "
                        "plugin (docs/data.md). A .jsonl/.json file (optionally .gz or .zst) holds one JSON object "
                        "per line; any other file is one document. A directory stands for the regular files in "
                        "it, in name order.");
  opts.add_options()("input", "comma-separated input files or directories", cxxopts::value<std::string>())(
      "output-prefix", "output prefix P (writes P_<key>_document.bin/.idx)", cxxopts::value<std::string>())(
      "jsonl-keys", "comma-separated keys of the jsonl objects to tokenize, one dataset each",
      cxxopts::value<std::string>()->default_value("text"))("tokenizer-type",
                                                            "HFTokenizer, GPT2BPETokenizer, CharLevelTokenizer or byte",
                                                            cxxopts::value<std::string>()->default_value("byte"))(
      "vocab-file", "tokenizer.json (HFTokenizer) or vocab.json (GPT2BPETokenizer)",
      cxxopts::value<std::string>()->default_value(""))("merge-file", "merges.txt (GPT2BPETokenizer)",
                                                        cxxopts::value<std::string>()->default_value(""))(
      "append-eod", "append the end-of-document token to every document")(
      "workers", "tokenizing threads (0: one per hardware thread)", cxxopts::value<int>()->default_value("1"))(
      "skip-malformed", "skip malformed jsonl lines (reported, counted) instead of stopping at the first")(
      "dataset-impl", "GPT-NeoX's dataset implementation: only mmap is written",
      cxxopts::value<std::string>()->default_value("mmap"))(
      "progress-interval", "seconds between progress lines on stderr (0: none)",
      cxxopts::value<double>()->default_value("1"))("h,help", "show this help");
  auto args = opts.parse(argc, argv);
  if (args.count("help")) {
    std::cout << opts.help() << "\n";
    return 0;
  }
  for (const char* required : {"input", "output-prefix"})
    if (!args.count(required)) throw Error(std::string("preprocess: --") + required + " is required (see --help)");
  if (args["dataset-impl"].as<std::string>() != "mmap")
    throw Error("preprocess: --dataset-impl " + args["dataset-impl"].as<std::string>() +
                " is not supported: neox writes the mmap format (GPT-NeoX's default)");
  const auto keys = split_list(args["jsonl-keys"].as<std::string>());
  if (keys.empty()) throw Error("preprocess: --jsonl-keys is empty");
  const int workers_arg = args["workers"].as<int>();
  if (workers_arg < 0) throw Error("preprocess: --workers must be >= 0");
  const int workers =
      workers_arg > 0 ? workers_arg : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const bool append_eod = args.count("append-eod") > 0;
  const bool skip_malformed = args.count("skip-malformed") > 0;
  const double interval = args["progress-interval"].as<double>();

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

  auto tokenizer = tokenizer_from_options(args["tokenizer-type"].as<std::string>(),
                                          args["vocab-file"].as<std::string>(), args["merge-file"].as<std::string>());
  const DType dtype = best_token_dtype(tokenizer->vocab_size());
  const std::string out = args["output-prefix"].as<std::string>();
  const auto parent = std::filesystem::path(out).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  // Written under temporary names; a failure below destroys the writers,
  // which removes them, and leaves any earlier dataset of the same name intact.
  std::vector<std::unique_ptr<IndexedDatasetWriter>> writers;
  for (const auto& k : keys)
    writers.push_back(std::make_unique<IndexedDatasetWriter>(out + "_" + k + "_document", dtype));
  std::vector<std::int64_t> docs(keys.size(), 0), tokens(keys.size(), 0);
  std::int64_t records = 0, malformed = 0, empty = 0;

  const bool tty = ::isatty(::fileno(stderr));
  const auto t0 = std::chrono::steady_clock::now();
  auto last = t0;
  ChunkReader reader(files, *tokenizer);
  // The plain-text document being written piece by piece: its tokens so
  // far, and whether a malformed piece made it skipped.
  std::int64_t text_tokens = 0;
  bool text_skipped = false;
  auto progress = [&](bool final) {
    const auto now = std::chrono::steady_clock::now();
    const double s = std::chrono::duration<double>(now - t0).count();
    if (interval <= 0 || (!final && std::chrono::duration<double>(now - last).count() < interval)) return;
    if (final && !tty) return;  // the summary on stdout says the same
    last = now;
    const double mb = static_cast<double>(reader.bytes()) / 1e6;
    std::fprintf(stderr, "%spreprocess: %lld documents, %.0f docs/s, %.1f MB, %.1f MB/s, file %zu/%zu%s",
                 tty ? "\r\033[K" : "", static_cast<long long>(records), s > 0 ? records / s : 0.0, mb,
                 s > 0 ? mb / s : 0.0, std::min(reader.files_done() + 1, files.size()), files.size(),
                 tty && !final ? "" : "\n");
    std::fflush(stderr);
  };

  auto pending = std::async(std::launch::async, [&] { return reader.next(); });
  for (;;) {
    std::vector<Record> chunk = pending.get();
    if (chunk.empty()) break;
    pending = std::async(std::launch::async, [&] { return reader.next(); });

    std::vector<Encoded> encoded(chunk.size());
    std::atomic<std::size_t> next{0};
    std::exception_ptr failure;  // anything but a malformed line (out of memory, ...)
    std::mutex failure_mutex;
    auto work = [&] {
      try {
        for (std::size_t i; (i = next.fetch_add(1)) < chunk.size();)
          encoded[i] = encode_record(chunk[i], files, keys, *tokenizer, append_eod);
      } catch (...) {
        std::lock_guard<std::mutex> lock(failure_mutex);
        if (!failure) failure = std::current_exception();
        next = chunk.size();
      }
    };
    const int n_threads = static_cast<int>(std::min<std::size_t>(workers, chunk.size()));
    std::vector<std::thread> threads;
    for (int t = 1; t < n_threads; ++t) threads.emplace_back(work);
    work();
    for (auto& t : threads) t.join();
    if (failure) std::rethrow_exception(failure);

    for (std::size_t i = 0; i < encoded.size(); ++i) {
      auto& e = encoded[i];
      const Record& rec = chunk[i];
      if (rec.line == 0) {  // a piece of a plain-text document (the first key only)
        if (!text_skipped && !e.error.empty()) {
          if (!skip_malformed) throw Error(e.error + " (--skip-malformed skips such files)");
          if (++malformed <= 10) spdlog::warn("skipped {}", e.error);
          writers[0]->discard_item();  // the pieces already written
          text_skipped = true;
        } else if (!text_skipped && !e.ids[0].empty()) {
          writers[0]->add_to_item(e.ids[0].data(), static_cast<std::int64_t>(e.ids[0].size()));
          text_tokens += static_cast<std::int64_t>(e.ids[0].size());
        }
        if (rec.last) {
          if (!text_skipped) {
            ++records;
            empty += static_cast<std::int64_t>(keys.size()) - 1;  // no text for the other keys
            if (text_tokens == 0) {
              ++empty;
            } else {
              writers[0]->end_item();
              writers[0]->end_document();
              ++docs[0];
              tokens[0] += text_tokens;
            }
          }
          text_tokens = 0;
          text_skipped = false;
        }
        continue;
      }
      if (!e.error.empty()) {
        if (!skip_malformed) throw Error(e.error + " (--skip-malformed skips such lines)");
        if (++malformed <= 10) spdlog::warn("skipped {}", e.error);
        continue;
      }
      ++records;
      for (std::size_t k = 0; k < keys.size(); ++k) {
        if (e.ids[k].empty()) {
          ++empty;
          continue;
        }
        writers[k]->add_item(e.ids[k].data(), static_cast<std::int64_t>(e.ids[k].size()));
        writers[k]->end_document();
        ++docs[k];
        tokens[k] += static_cast<std::int64_t>(e.ids[k].size());
      }
    }
    progress(false);
  }
  for (auto& w : writers) w->finish();
  progress(true);

  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double mb = static_cast<double>(reader.bytes()) / 1e6;
  for (std::size_t k = 0; k < keys.size(); ++k)
    std::cout << "wrote " << out << "_" << keys[k] << "_document.bin/.idx: " << docs[k] << " documents, " << tokens[k]
              << " tokens (" << (dtype == DType::u16 ? "uint16" : "int32") << ")\n";
  if (reader.text_files() > 0) {
    if (reader.streaming())
      std::cout << "plain text: " << reader.text_files() << " files read in " << reader.pieces() << " pieces\n";
    else
      std::cout << "plain text: " << reader.text_files() << " files read whole (" << tokenizer->name()
                << " cannot encode a text in pieces)\n";
  }
  char line[256];
  std::snprintf(line, sizeof line,
                "read %zu files, %.1f MB in %.2f s (%.0f docs/s, %.1f MB/s); %lld malformed lines skipped, "
                "%lld empty documents left out; peak RSS %.1f MiB\n",
                files.size(), mb, s, s > 0 ? records / s : 0.0, s > 0 ? mb / s : 0.0, static_cast<long long>(malformed),
                static_cast<long long>(empty), peak_rss_mib());
  std::cout << line;
  return 0;
}

}  // namespace neox::app
