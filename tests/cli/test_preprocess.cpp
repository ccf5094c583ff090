// SPDX-License-Identifier: Apache-2.0
// `neox preprocess` (jsonl, gzip, zstd, plain text -> Megatron indexed
// datasets) and `neox data inspect/merge`. The LineReader under them:
// tests/unit/test_line_reader.cpp; the writer: tests/unit/test_indexed_dataset.cpp.
// The expected .bin/.idx bytes are laid out here from the format
// description (core/include/neox/io/indexed_dataset.h), not by our writer.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <regex>

#include "compressed_files.h"
#include "neox/io/indexed_dataset.h"
#include "neox/text/bpe_tokenizer.h"
#include "neox/text/tokenizers.h"
#include "test_support.h"

namespace fs = std::filesystem;
using neox::test::read_text;
using neox::test::run_neox;
using neox::test::temp_dir;

namespace {

void write_file(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  out << data;
  ASSERT_TRUE(out.good()) << path;
}

std::string jsonl_of(const std::vector<std::string>& texts) {
  std::string s;
  for (const auto& t : texts) s += nlohmann::json{{"text", t}, {"meta", 1}}.dump() + "\n";
  return s;
}

// Every document of a dataset as token ids.
std::vector<std::vector<std::int32_t>> documents(const std::string& prefix) {
  const auto ds = neox::IndexedDataset::open(prefix);
  std::vector<std::vector<std::int32_t>> docs;
  for (std::int64_t d = 0; d < ds.num_documents(); ++d) {
    std::vector<std::int32_t> ids;
    for (std::int64_t i = ds.doc_idx()[d]; i < ds.doc_idx()[d + 1]; ++i) {
      const std::size_t at = ids.size();
      ids.resize(at + ds.sizes()[i]);
      ds.read(i, 0, ds.sizes()[i], ids.data() + at);
    }
    docs.push_back(ids);
  }
  return docs;
}

std::vector<std::int32_t> bytes_plus_eod(const std::string& s) {
  std::vector<std::int32_t> v(s.begin(), s.end());
  for (auto& x : v) x &= 0xff;
  v.push_back(256);
  return v;
}

// Little-endian bytes of an integer.
template <typename T>
void put(std::string& s, T v) {
  for (std::size_t i = 0; i < sizeof(T); ++i)
    s.push_back(static_cast<char>((static_cast<std::uint64_t>(v) >> (8 * i)) & 0xff));
}

// No P_* outputs and no temporary files left in `dir` besides the inputs.
std::vector<std::string> outputs_in(const std::string& dir) {
  std::vector<std::string> found;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("out", 0) == 0) found.push_back(name);
  }
  return found;
}

const std::vector<std::string> kTexts = {"Hello world", "second document\twith a tab", "",
                                         "unicode: \xc3\xa9t\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
                                         std::string(3000, 'x') + "\\ \"quoted\" {braces}"};

}  // namespace

// Two documents laid out by hand: byte tokenizer (ids = bytes, end of
// document 256, vocabulary 257 < 65500 -> uint16, code 8).
TEST(Preprocess, ByteExactAgainstHandMadeIdxAndBin) {
  const auto dir = temp_dir("preprocess", "exact");
  write_file(dir + "/in.jsonl", "{\"text\": \"ab\"}\n{\"text\": \"c\", \"other\": 5}\n");
  auto r = run_neox("preprocess --input " + dir + "/in.jsonl --output-prefix " + dir +
                    "/out --tokenizer-type byte --append-eod --progress-interval 0");
  ASSERT_EQ(r.status, 0) << r.output;

  std::string bin;
  for (std::uint16_t t : {97, 98, 256, 99, 256}) put(bin, t);
  std::string idx("MMIDIDX\0\0", 9);
  put<std::uint64_t>(idx, 1);  // version
  put<std::uint8_t>(idx, 8);   // dtype code: uint16
  put<std::uint64_t>(idx, 2);  // items
  put<std::uint64_t>(idx, 3);  // doc_idx entries = documents + 1
  put<std::int32_t>(idx, 3);   // sizes
  put<std::int32_t>(idx, 2);
  put<std::int64_t>(idx, 0);  // pointers: byte offsets in .bin
  put<std::int64_t>(idx, 6);
  for (std::int64_t d : {0, 1, 2}) put<std::int64_t>(idx, d);
  EXPECT_EQ(read_text(dir + "/out_text_document.bin"), bin);
  EXPECT_EQ(read_text(dir + "/out_text_document.idx"), idx);
  EXPECT_NE(r.output.find("2 documents, 5 tokens (uint16)"), std::string::npos) << r.output;
}

// Plain-text files stay one document each, as before jsonl support.
TEST(Preprocess, PlainTextFileIsOneDocument) {
  const auto dir = temp_dir("preprocess", "txt");
  write_file(dir + "/a.txt", "line one\nline two\n");
  write_file(dir + "/b.txt", "{\"text\": \"not parsed\"}");
  auto r = run_neox("preprocess --input " + dir + "/a.txt," + dir + "/b.txt --output-prefix " + dir +
                    "/out --append-eod --progress-interval 0");
  ASSERT_EQ(r.status, 0) << r.output;
  auto docs = documents(dir + "/out_text_document");
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[0], bytes_plus_eod("line one\nline two\n"));
  EXPECT_EQ(docs[1], bytes_plus_eod("{\"text\": \"not parsed\"}"));
}

// The same corpus as .jsonl, .jsonl.gz (two gzip members) and .jsonl.zst,
// with 1 and 3 workers, gives byte-identical datasets; the empty text is
// left out without --append-eod.
TEST(Preprocess, JsonlGzipZstdAndWorkersGiveIdenticalOutputs) {
  const auto dir = temp_dir("preprocess", "formats");
  std::vector<std::string> texts;
  for (int i = 0; i < 400; ++i) texts.push_back(kTexts[i % kTexts.size()] + " #" + std::to_string(i));
  texts[7] = "";
  const std::string jsonl = jsonl_of(texts);
  write_file(dir + "/c.jsonl", jsonl);
  const std::size_t half = jsonl.find('\n', jsonl.size() / 2) + 1;
  write_file(dir + "/c.jsonl.gz",
             neox::test::gzip_bytes(jsonl.substr(0, half)) + neox::test::gzip_bytes(jsonl.substr(half)));
  write_file(dir + "/c.jsonl.zst", neox::test::zstd_bytes(jsonl));
  std::string reference;
  for (const char* in : {"c.jsonl", "c.jsonl.gz", "c.jsonl.zst"}) {
    for (int workers : {1, 3}) {
      auto r = run_neox("preprocess --input " + dir + "/" + in + " --output-prefix " + dir + "/out --workers " +
                        std::to_string(workers) + " --progress-interval 0");
      ASSERT_EQ(r.status, 0) << in << ": " << r.output;
      const std::string got = read_text(dir + "/out_text_document.bin") + read_text(dir + "/out_text_document.idx");
      if (reference.empty()) reference = got;
      EXPECT_EQ(got, reference) << in << " with " << workers << " workers";
    }
  }
  auto docs = documents(dir + "/out_text_document");
  ASSERT_EQ(docs.size(), 399u);
  std::vector<std::int32_t> first(texts[0].begin(), texts[0].end());
  EXPECT_EQ(docs[0], first);
  auto last = bytes_plus_eod(texts[399]);
  last.pop_back();
  EXPECT_EQ(docs[398], last);
}

// Several inputs in order, several keys, one dataset per key.
TEST(Preprocess, SeveralFilesAndKeys) {
  const auto dir = temp_dir("preprocess", "keys");
  write_file(dir + "/a.jsonl", "{\"text\": \"t1\", \"title\": \"T1\"}\n\n{\"text\": \"t2\", \"title\": \"T2\"}\r\n");
  write_file(dir + "/b.json.zst", neox::test::zstd_bytes("{\"title\": \"T3\", \"text\": \"t3\"}"));
  auto r = run_neox("preprocess --input " + dir + "/a.jsonl," + dir + "/b.json.zst --jsonl-keys text,title " +
                    "--output-prefix " + dir + "/out --append-eod --workers 2 --progress-interval 0");
  ASSERT_EQ(r.status, 0) << r.output;
  auto text = documents(dir + "/out_text_document");
  auto title = documents(dir + "/out_title_document");
  ASSERT_EQ(text.size(), 3u);
  ASSERT_EQ(title.size(), 3u);
  EXPECT_EQ(text[1], bytes_plus_eod("t2"));
  EXPECT_EQ(title[2], bytes_plus_eod("T3"));
}

// HFTokenizer ids equal the Hugging Face reference encodings; the
// vocabulary (1000) gives uint16.
TEST(Preprocess, HFTokenizerMatchesReferenceIds) {
  const auto dir = temp_dir("preprocess", "hf");
  const std::string td = neox::test::testdata_dir() + "/tokenizers/";
  const auto expected = nlohmann::json::parse(read_text(td + "bpe_bytelevel_1k.expected.json"));
  std::vector<std::string> texts;
  std::vector<std::vector<std::int32_t>> ids;
  for (const auto& e : expected["encodings"]) {
    if (e["ids"].empty()) continue;
    texts.push_back(e["text"]);
    ids.push_back(e["ids"].get<std::vector<std::int32_t>>());
    ids.back().push_back(0);  // <|endoftext|>
  }
  write_file(dir + "/in.jsonl", jsonl_of(texts));
  auto r = run_neox("preprocess --input " + dir + "/in.jsonl --output-prefix " + dir +
                    "/out --tokenizer-type HFTokenizer --vocab-file " + td +
                    "bpe_bytelevel_1k.json --append-eod --workers 2 --progress-interval 0");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(documents(dir + "/out_text_document"), ids);
  EXPECT_EQ(neox::IndexedDataset::open(dir + "/out_text_document").dtype(), neox::DType::u16);
}

// A vocabulary of 65500 or more gives int32 tokens (dtype code 4).
TEST(Preprocess, LargeVocabularyGivesInt32) {
  const auto dir = temp_dir("preprocess", "i32");
  auto tok = nlohmann::json::parse(read_text(neox::test::testdata_dir() + "/tokenizers/bpe_bytelevel_1k.json"));
  for (int i = 1000; i < 70000; ++i) tok["model"]["vocab"]["<filler" + std::to_string(i) + ">"] = i;
  write_file(dir + "/tokenizer.json", tok.dump());
  write_file(dir + "/in.jsonl", jsonl_of({"Hello world"}));
  auto r = run_neox("preprocess --input " + dir + "/in.jsonl --output-prefix " + dir +
                    "/out --tokenizer-type HFTokenizer --vocab-file " + dir + "/tokenizer.json --progress-interval 0");
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string idx = read_text(dir + "/out_text_document.idx");
  ASSERT_GT(idx.size(), 18u);
  EXPECT_EQ(static_cast<int>(idx[17]), 4);
  EXPECT_EQ(documents(dir + "/out_text_document"),
            (std::vector<std::vector<std::int32_t>>{{41, 70, 398, 80, 275, 269, 468}}));
}

// A malformed line stops the run with FILE:LINE and leaves nothing (and an
// earlier dataset of the same name untouched); --skip-malformed skips it.
TEST(Preprocess, MalformedLinesNameFileAndLine) {
  const auto dir = temp_dir("preprocess", "malformed");
  write_file(dir + "/good.jsonl", jsonl_of({"kept"}));
  auto ok = run_neox("preprocess --input " + dir + "/good.jsonl --output-prefix " + dir + "/out --progress-interval 0");
  ASSERT_EQ(ok.status, 0) << ok.output;
  const std::string before = read_text(dir + "/out_text_document.bin") + read_text(dir + "/out_text_document.idx");
  struct Case {
    std::string line, message;
  };
  const std::vector<Case> cases = {{"{\"text\": \"unterminated}", "bad.jsonl:3: invalid JSON"},
                                   {"{\"body\": \"x\"}", "bad.jsonl:3: no key \"text\""},
                                   {"{\"text\": 12}", "bad.jsonl:3: key \"text\" is a number, not a string"},
                                   {"[1, 2]", "bad.jsonl:3: expected a JSON object, found array"},
                                   {"{\"text\": \"\xff\xfe\"}", "bad.jsonl:3: invalid JSON"}};
  for (const auto& c : cases) {
    write_file(dir + "/bad.jsonl", jsonl_of({"a", "b"}) + c.line + "\n" + jsonl_of({"d"}));
    auto r = run_neox("preprocess --input " + dir + "/bad.jsonl --output-prefix " + dir + "/out --progress-interval 0");
    EXPECT_NE(r.status, 0);
    EXPECT_NE(r.output.find(c.message), std::string::npos) << r.output;
    EXPECT_EQ(read_text(dir + "/out_text_document.bin") + read_text(dir + "/out_text_document.idx"), before);
    EXPECT_EQ(outputs_in(dir).size(), 2u) << "temporary files left behind";

    r = run_neox("preprocess --input " + dir + "/bad.jsonl --output-prefix " + dir +
                 "/out --skip-malformed --progress-interval 0");
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("1 malformed lines skipped"), std::string::npos) << r.output;
    auto docs = documents(dir + "/out_text_document");
    ASSERT_EQ(docs.size(), 3u);
    EXPECT_EQ(docs[2], std::vector<std::int32_t>({'d'}));
    ok = run_neox("preprocess --input " + dir + "/good.jsonl --output-prefix " + dir + "/out --progress-interval 0");
    ASSERT_EQ(ok.status, 0);
  }
}

// Truncated and corrupted gzip/zstd inputs are fatal, name the file, and
// leave no output, even with --skip-malformed.
TEST(Preprocess, TruncatedAndCorruptCompressedInputs) {
  const auto dir = temp_dir("preprocess", "corrupt");
  std::vector<std::string> texts;
  for (int i = 0; i < 2000; ++i) texts.push_back("document number " + std::to_string(i * 7919));
  const std::string jsonl = jsonl_of(texts);
  const std::string gz = neox::test::gzip_bytes(jsonl), zs = neox::test::zstd_bytes(jsonl);
  struct Case {
    std::string name, data, message;
  };
  std::string gz_bad = gz, zs_bad = zs;
  gz_bad[gz.size() / 2] ^= 0x55;
  zs_bad[zs.size() / 2] ^= 0x55;
  const std::vector<Case> cases = {
      {"t.jsonl.gz", gz.substr(0, gz.size() - 20), "t.jsonl.gz:"},
      {"t.jsonl.zst", zs.substr(0, zs.size() - 20), "t.jsonl.zst:"},
      {"c.jsonl.gz", gz_bad, "c.jsonl.gz:"},
      {"c.jsonl.zst", zs_bad, "c.jsonl.zst:"},
  };
  for (const auto& c : cases) {
    write_file(dir + "/" + c.name, c.data);
    auto r = run_neox("preprocess --input " + dir + "/" + c.name + " --output-prefix " + dir +
                      "/out --skip-malformed --progress-interval 0");
    EXPECT_NE(r.status, 0) << c.name << ": " << r.output;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << r.output;
    const bool named = r.output.find("truncated") != std::string::npos || r.output.find("corrupt") != std::string::npos;
    EXPECT_TRUE(named) << r.output;
    EXPECT_TRUE(outputs_in(dir).empty()) << c.name << " left " << outputs_in(dir).front();
    fs::remove(dir + "/" + c.name);
  }
}

// A jsonl file cut inside its last object: that line is malformed.
TEST(Preprocess, TruncatedJsonlNamesTheLastLine) {
  const auto dir = temp_dir("preprocess", "cut");
  const std::string jsonl = jsonl_of({"one", "two", "three"});
  write_file(dir + "/cut.jsonl", jsonl.substr(0, jsonl.size() - 8));
  auto r = run_neox("preprocess --input " + dir + "/cut.jsonl --output-prefix " + dir + "/out --progress-interval 0");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("cut.jsonl:3: invalid JSON: parse error at column"), std::string::npos) << r.output;
  EXPECT_TRUE(outputs_in(dir).empty());
}

// Progress lines on a non-terminal stderr: plain lines with documents,
// documents/s and MB/s (4096-line chunks: 10000 lines give 3 of them).
TEST(Preprocess, ProgressLines) {
  const auto dir = temp_dir("preprocess", "progress");
  write_file(dir + "/p.jsonl", jsonl_of(std::vector<std::string>(10000, "some text")));
  auto r =
      run_neox("preprocess --input " + dir + "/p.jsonl --output-prefix " + dir + "/out --progress-interval 0.000001");
  ASSERT_EQ(r.status, 0) << r.output;
  const std::regex line(R"(preprocess: (\d+) documents, \d+ docs/s, [0-9.]+ MB, [0-9.]+ MB/s, file 1/1\n)");
  std::vector<long> counts;
  for (std::sregex_iterator it(r.output.begin(), r.output.end(), line), end; it != end; ++it)
    counts.push_back(std::stol((*it)[1]));
  EXPECT_EQ(counts, (std::vector<long>{4096, 8192, 10000})) << r.output;
  EXPECT_EQ(r.output.find('\r'), std::string::npos);
}

TEST(DataCommand, InspectAndMerge) {
  const auto dir = temp_dir("preprocess", "data");
  write_file(dir + "/a.jsonl", jsonl_of({"alpha", "beta"}));
  write_file(dir + "/b.jsonl", jsonl_of({"gamma"}));
  ASSERT_EQ(run_neox("preprocess --input " + dir + "/a.jsonl --output-prefix " + dir +
                     "/A --append-eod --progress-interval 0")
                .status,
            0);
  ASSERT_EQ(run_neox("preprocess --input " + dir + "/b.jsonl --output-prefix " + dir +
                     "/B --append-eod --progress-interval 0")
                .status,
            0);
  auto r = run_neox("data inspect " + dir + "/A_text_document --document 1");
  ASSERT_EQ(r.status, 0) << r.output;
  for (const char* want : {"dtype: uint16", "documents: 2", "tokens: 11", "largest token id: 256",
                           "document 1: 5 tokens; the first 5: 98 101 116 97 256", "decoded (byte): beta"})
    EXPECT_NE(r.output.find(want), std::string::npos) << want << "\n" << r.output;
  r = run_neox("data inspect " + dir + "/A_text_document --document 2");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("outside [0, 2)"), std::string::npos) << r.output;

  r = run_neox("data merge --input " + dir + "/A_text_document," + dir + "/B_text_document.idx --output-prefix " + dir +
               "/M");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("3 documents, 17 tokens (uint16)"), std::string::npos) << r.output;
  // The merge equals preprocessing both inputs in one run.
  ASSERT_EQ(run_neox("preprocess --input " + dir + "/a.jsonl," + dir + "/b.jsonl --output-prefix " + dir +
                     "/AB --append-eod --progress-interval 0")
                .status,
            0);
  EXPECT_EQ(read_text(dir + "/M.bin"), read_text(dir + "/AB_text_document.bin"));
  EXPECT_EQ(read_text(dir + "/M.idx"), read_text(dir + "/AB_text_document.idx"));
  r = run_neox("data merge --input " + dir + "/A_text_document," + dir + "/nothing --output-prefix " + dir + "/N");
  EXPECT_NE(r.status, 0);
  EXPECT_FALSE(fs::exists(dir + "/N.bin"));
}

// ---------------------------------------------------------------- plain text in pieces

namespace {

// The .bin and .idx of a dataset of one document of uint16 `ids`, laid out
// from the format description.
std::pair<std::string, std::string> one_document_dataset(const std::vector<std::int32_t>& ids) {
  std::string bin, idx("MMIDIDX\0\0", 9);
  for (std::int32_t t : ids) put(bin, static_cast<std::uint16_t>(t));
  put<std::uint64_t>(idx, 1);  // version
  put<std::uint8_t>(idx, 8);   // uint16
  put<std::uint64_t>(idx, 1);  // one item
  put<std::uint64_t>(idx, 2);  // doc_idx entries
  put<std::int32_t>(idx, static_cast<std::int32_t>(ids.size()));
  put<std::int64_t>(idx, 0);  // its pointer
  put<std::int64_t>(idx, 0);
  put<std::int64_t>(idx, 1);
  return {bin, idx};
}

// About `bytes` bytes of lines of ASCII and non-ASCII words (decomposed
// accents, which NFC composes; CJK; Greek), some lines starting with spaces
// or a tab, with trailing spaces, ending in CRLF, blank, or starting with a
// non-ASCII letter, a digit, punctuation or an added token.
std::string mixed_text(std::size_t bytes, unsigned seed) {
  std::mt19937 rng(seed);
  const std::vector<std::string> words = {"the",
                                          "model",
                                          "Z\xc3\xbcrich",
                                          "nai\xcc\x88ve",
                                          "e\xcc\x81t\xc3\xa9",
                                          "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e",
                                          "\xce\xa9mega",
                                          "1234",
                                          "it's",
                                          "\"quoted\"",
                                          "{braces}",
                                          "<|endoftext|>",
                                          "--",
                                          "\xc3\xa9l\xc3\xa8ve",
                                          "x"};
  const std::vector<std::string> starts = {
      "", "", "", "", " ", "  ", "   ", "\t", "\xc3\x89", "\xe6\x97\xa5", "7", "* ", "<|endoftext|>", "\xcc\x81"};
  const std::vector<std::string> ends = {"\n", "\n", "\n", "\r\n", "  \n", " \r\n", "\n\n", "\n \n", "\t\n"};
  std::string s;
  while (s.size() < bytes) {
    s += starts[rng() % starts.size()];
    const int n = static_cast<int>(rng() % 14);
    for (int i = 0; i < n; ++i) {
      if (i) s += (rng() % 9 == 0) ? "  " : " ";
      s += words[rng() % words.size()];
    }
    s += ends[rng() % ends.size()];
  }
  return s;
}

// The test tokenizer (GPT-NeoX-20B's format) with merges of whitespace
// before a newline ("\n\n", "\r\n", " \n", "\t\n", as GPT-NeoX-20B has),
// so that a pre-token split in the wrong place changes the ids; with `nfc`,
// also an NFC normalizer and a normalized added token of two spaces, as
// GPT-NeoX-20B's tokenizer has.
std::string rich_tokenizer(const std::string& dir, bool nfc) {
  auto tok = nlohmann::json::parse(read_text(neox::test::testdata_dir() + "/tokenizers/bpe_bytelevel_1k.json"));
  auto& model = tok["model"];
  int next_id = 0;
  for (const auto& [k, v] : model["vocab"].items()) next_id = std::max(next_id, v.get<int>() + 1);
  // Byte-level spellings: "\n" is U+010A, "\r" U+010D, "\t" U+0109, " " U+0120.
  for (const char* first : {"\xc4\x8a", "\xc4\x8d", "\xc4\xa0", "\xc4\x89"}) {
    model["vocab"][std::string(first) + "\xc4\x8a"] = next_id++;
    model["merges"].push_back({first, "\xc4\x8a"});
  }
  if (nfc) {
    tok["normalizer"] = {{"type", "NFC"}};
    tok["added_tokens"].push_back({{"id", next_id},
                                   {"content", "  "},
                                   {"single_word", false},
                                   {"lstrip", false},
                                   {"rstrip", false},
                                   {"normalized", true},
                                   {"special", false}});
  }
  const std::string path = dir + (nfc ? "/nfc_tokenizer.json" : "/ws_tokenizer.json");
  write_file(path, tok.dump());
  return path;
}

// The number N of "plain text: 1 files read in N pieces"; -1 when read whole.
long pieces_of(const std::string& output) {
  std::smatch m;
  if (std::regex_search(output, m, std::regex(R"(plain text: \d+ files read in (\d+) pieces)"))) return std::stol(m[1]);
  return -1;
}

// Preprocesses `input` with `tokenizer` and checks the dataset is,
// byte for byte, the one document encode(text) (+ end of document), and
// that the text was read in at least `min_pieces` pieces (-1: read whole);
// `pieces` gets their number.
void expect_whole_text_ids(const std::string& dir, const std::string& input, const std::string& tokenizer,
                           const std::string& text, bool append_eod, long min_pieces, long* pieces = nullptr) {
  const auto tok = neox::BpeTokenizer::from_hf_json(tokenizer);
  std::vector<std::int32_t> ids = tok->encode(text);
  if (append_eod) ids.push_back(tok->eod_id());
  const auto [bin, idx] = one_document_dataset(ids);
  auto r = run_neox("preprocess --input " + input + " --output-prefix " + dir + "/out --tokenizer-type HFTokenizer " +
                    "--vocab-file " + tokenizer + " --workers 2 --progress-interval 0" +
                    (append_eod ? " --append-eod" : ""));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_GE(pieces_of(r.output), min_pieces) << input << ": " << r.output;
  if (pieces) *pieces = pieces_of(r.output);
  const std::string got_bin = read_text(dir + "/out_text_document.bin");
  EXPECT_EQ(got_bin.size(), bin.size()) << input;
  EXPECT_TRUE(got_bin == bin) << input << ": the .bin differs from encoding the whole text";
  EXPECT_EQ(read_text(dir + "/out_text_document.idx"), idx) << input;
}

}  // namespace

// A plain-text file of 4 MiB is read and tokenized in pieces of at most
// 1 MiB (cut before a "\n" followed by a letter or number), yet the dataset
// is byte for byte encode(whole text) as one document: plain, --append-eod,
// gzip, zstd, with the test tokenizer and its variants (whitespace merges, NFC).
TEST(Preprocess, PlainTextInPiecesEqualsWholeText) {
  const auto dir = temp_dir("preprocess", "pieces");
  const std::string text = mixed_text(4u << 20, 11);
  write_file(dir + "/t.txt", text);
  write_file(dir + "/t.txt.gz", neox::test::gzip_bytes(text));
  write_file(dir + "/t.zst", neox::test::zstd_bytes(text));
  const std::string base = neox::test::testdata_dir() + "/tokenizers/bpe_bytelevel_1k.json";
  const std::string ws = rich_tokenizer(dir, false), nfc = rich_tokenizer(dir, true);
  expect_whole_text_ids(dir, dir + "/t.txt", base, text, false, 4);
  expect_whole_text_ids(dir, dir + "/t.txt", ws, text, false, 4);
  expect_whole_text_ids(dir, dir + "/t.txt", ws, text, true, 4);
  expect_whole_text_ids(dir, dir + "/t.txt.gz", ws, text, true, 4);
  expect_whole_text_ids(dir, dir + "/t.zst", nfc, text, true, 4);
  expect_whole_text_ids(dir, dir + "/t.txt", nfc, text, false, 4);
  fs::remove_all(dir);
}

// A tokenizer that cannot be cut (add_prefix_space would give each piece a
// space) reads the file whole, with the same ids as encoding it whole.
TEST(Preprocess, PlainTextWithUncuttableTokenizerIsReadWhole) {
  const auto dir = temp_dir("preprocess", "whole");
  auto tok = nlohmann::json::parse(read_text(neox::test::testdata_dir() + "/tokenizers/bpe_bytelevel_1k.json"));
  tok["pre_tokenizer"]["add_prefix_space"] = true;
  write_file(dir + "/prefix.json", tok.dump());
  const std::string text = mixed_text(2u << 20, 12);
  write_file(dir + "/t.txt", text);
  expect_whole_text_ids(dir, dir + "/t.txt", dir + "/prefix.json", text, true, -1);
  auto r =
      run_neox("preprocess --input " + dir + "/t.txt --output-prefix " + dir + "/out --tokenizer-type HFTokenizer " +
               "--vocab-file " + dir + "/prefix.json --progress-interval 0");
  EXPECT_NE(r.output.find("plain text: 1 files read whole (HFTokenizer cannot encode a text in pieces)"),
            std::string::npos)
      << r.output;
}

// No place to cut in a 1 MiB window: the piece grows until one comes or the
// file ends (the rest of a file is one piece). One 3 MiB line; a 3 MiB line
// between short lines; 3 MiB of lines that all start with a space, alone
// and with one line that starts with a letter in the middle.
TEST(Preprocess, PlainTextWithoutCutsGrowsThePiece) {
  const auto dir = temp_dir("preprocess", "nocut");
  const std::string base = rich_tokenizer(dir, true);
  std::string line;
  std::mt19937 rng(5);
  while (line.size() < (3u << 20)) line += (rng() % 3 ? "word " : "\xc3\xa9t\xc3\xa9  ");
  const std::string short_lines = mixed_text(300u << 10, 13);
  std::string spaced;
  while (spaced.size() < (3u << 20)) spaced += " indented line " + std::to_string(rng() % 1000) + "\n";
  struct Case {
    std::string text;
    long pieces;
  };
  // The number of pieces, or 0 for "at least 2".
  for (const Case& c : {Case{line, 1}, Case{short_lines + line + "\n" + short_lines, 0}, Case{spaced, 1},
                        Case{spaced + "last line\n" + spaced, 2}}) {
    write_file(dir + "/t.txt", c.text);
    long pieces = 0;
    expect_whole_text_ids(dir, dir + "/t.txt", base, c.text, true, 1, &pieces);
    if (c.pieces)
      EXPECT_EQ(pieces, c.pieces) << c.text.size();
    else
      EXPECT_GE(pieces, 2);
  }
  fs::remove_all(dir);
}

// Invalid UTF-8 in a later piece: the error names the file and the piece;
// --skip-malformed skips the whole file (its pieces already written are
// dropped from .bin) and keeps the next one.
TEST(Preprocess, PlainTextMalformedPieceSkipsTheFile) {
  const auto dir = temp_dir("preprocess", "badtext");
  const std::string base = neox::test::testdata_dir() + "/tokenizers/bpe_bytelevel_1k.json";
  std::string bad = mixed_text(3u << 20, 14);
  bad.insert(bad.find('\n', (5u << 20) / 2) + 1, "\xff");
  write_file(dir + "/a.txt", bad);
  write_file(dir + "/b.txt", "kept text\nhere");
  const std::string cmd = "preprocess --input " + dir + "/a.txt," + dir + "/b.txt --output-prefix " + dir +
                          "/out --tokenizer-type HFTokenizer --vocab-file " + base + " --progress-interval 0";
  auto r = run_neox(cmd);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("a.txt: cannot tokenize (the piece from byte "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("not valid UTF-8"), std::string::npos) << r.output;
  EXPECT_TRUE(outputs_in(dir).empty());
  r = run_neox(cmd + " --skip-malformed --workers 2");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("1 malformed lines skipped"), std::string::npos) << r.output;
  const auto tok = neox::BpeTokenizer::from_hf_json(base);
  const auto [bin, idx] = one_document_dataset(tok->encode("kept text\nhere"));
  EXPECT_EQ(read_text(dir + "/out_text_document.bin"), bin);
  EXPECT_EQ(read_text(dir + "/out_text_document.idx"), idx);
  fs::remove_all(dir);
}

// Where a tokenizer may be cut: before "\n" + a letter or number for a
// byte-level BPE that has nothing that reaches across (see bpe_tokenizer.h);
// any "\n" for the byte and CharLevel tokenizers.
TEST(Preprocess, TokenizerCutRules) {
  const auto dir = temp_dir("preprocess", "cutrules");
  const std::string base_path = neox::test::testdata_dir() + "/tokenizers/bpe_bytelevel_1k.json";
  const auto base = neox::BpeTokenizer::from_hf_json(rich_tokenizer(dir, true));
  for (char32_t c : {U'a', U'Z', U'7', U'\u00e9', U'\u65e5', U'\u0660'})
    EXPECT_TRUE(base->can_split_before_newline(c)) << static_cast<std::uint32_t>(c);
  for (char32_t c : {U' ', U'\t', U'\n', U'\r', U'<', U'-', U'\u3000', U'\u00a0', U'\u0301', U'\u037e'})
    EXPECT_FALSE(base->can_split_before_newline(c)) << static_cast<std::uint32_t>(c);
  const auto variant = [&](const std::function<void(nlohmann::json&)>& change) {
    auto tok = nlohmann::json::parse(read_text(base_path));
    change(tok);
    write_file(dir + "/variant.json", tok.dump());
    return neox::BpeTokenizer::from_hf_json(dir + "/variant.json")->can_split_before_newline(U'a');
  };
  const auto added = [](const std::string& content, bool rstrip) {
    return nlohmann::json{{"id", 1000},       {"content", content},  {"single_word", false}, {"lstrip", true},
                          {"rstrip", rstrip}, {"normalized", false}, {"special", true}};
  };
  EXPECT_TRUE(variant([](nlohmann::json&) {}));
  EXPECT_TRUE(variant([&](nlohmann::json& t) { t["added_tokens"].push_back(added("<|x|>", false)); }));
  EXPECT_FALSE(variant([](nlohmann::json& t) { t["pre_tokenizer"]["add_prefix_space"] = true; }));
  EXPECT_FALSE(variant([](nlohmann::json& t) { t["pre_tokenizer"]["use_regex"] = false; }));
  EXPECT_FALSE(variant([](nlohmann::json& t) { t["normalizer"] = {{"type", "NFKC"}}; }));
  EXPECT_FALSE(variant([&](nlohmann::json& t) { t["added_tokens"].push_back(added("<|x|>", true)); }));
  EXPECT_FALSE(variant([&](nlohmann::json& t) { t["added_tokens"].push_back(added("a\nb", false)); }));
  EXPECT_FALSE(variant([&](nlohmann::json& t) { t["added_tokens"].push_back(added("word", false)); }));
  EXPECT_FALSE(variant([](nlohmann::json& t) {
    t["post_processor"] = nlohmann::json::parse(R"({"type": "TemplateProcessing",
      "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
      "pair": [], "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [0], "tokens": ["<|endoftext|>"]}}})");
  }));
  EXPECT_TRUE(neox::make_tokenizer("byte", "", "")->can_split_before_newline(U' '));
  EXPECT_TRUE(neox::make_tokenizer("CharLevelTokenizer", "", "")->can_split_before_newline(U'\n'));
  const std::string gpt2 = neox::test::testdata_dir() + "/tokenizers/gpt2_format_1k/";
  const auto gpt2_tok = neox::make_tokenizer("GPT2BPETokenizer", gpt2 + "vocab.json", gpt2 + "merges.txt");
  EXPECT_TRUE(gpt2_tok->can_split_before_newline(U'a'));
  EXPECT_FALSE(gpt2_tok->can_split_before_newline(U' '));
  fs::remove_all(dir);
}

namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif

// Runs argv to completion; its exit status and peak RSS in MiB (wait4).
std::pair<int, double> run_measured(const std::vector<std::string>& argv, const std::string& log) {
  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    if (!freopen(log.c_str(), "w", stdout) || !freopen(log.c_str(), "a", stderr)) _exit(126);
    execv(cargv[0], cargv.data());
    _exit(127);
  }
  int status = 0;
  rusage u{};
  wait4(pid, &status, 0, &u);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, static_cast<double>(u.ru_maxrss) / 1024.0};
}

}  // namespace

// A generated jsonl corpus of NEOX_TEST_PREPROCESS_MB MiB (default 1024;
// 32 in sanitizer builds, 25x slower) preprocessed with 2 workers: the
// counts are right and, in builds without sanitizers, the peak resident
// memory of `neox preprocess`, measured by wait4, stays under 200 MiB, a
// fraction of the input and of the 2 GiB output. About 15 s on 2 cores.
TEST(Preprocess, LargeInputInBoundedMemory) {
  const std::int64_t mb = std::stoll(neox::test::env_or("NEOX_TEST_PREPROCESS_MB", kSanitized ? "32" : "1024"));
  const auto dir = temp_dir("preprocess", "large");
  struct statvfs vfs {};
  ASSERT_EQ(statvfs(dir.c_str(), &vfs), 0);
  const double free_gb = static_cast<double>(vfs.f_bavail) * vfs.f_frsize / 1e9;
  const double need_gb = 3.2 * static_cast<double>(mb) / 1024.0 + 0.2;  // input + uint16 output (2x)
  if (free_gb < need_gb) GTEST_SKIP() << "needs " << need_gb << " GB free in " << dir << ", has " << free_gb;

  // Documents of 200..4000 bytes of varied ASCII, JSON-escaped by hand.
  const auto t0 = std::chrono::steady_clock::now();
  std::int64_t docs = 0, text_bytes = 0;
  {
    std::ofstream out(dir + "/big.jsonl", std::ios::binary);
    std::mt19937 rng(7);
    const std::string words[] = {"the ", "model ",          "trains ",     "on ",   "tokens, ",
                                 "and ", "\\\"quotes\\\" ", "newlines\\n", "data ", "1234 "};
    const std::int64_t target = mb << 20;
    std::string line;
    std::int64_t written = 0;
    while (written < target) {
      const int len = 200 + static_cast<int>(rng() % 3800);
      line = "{\"id\": " + std::to_string(docs) + ", \"text\": \"";
      std::int64_t n = 0;
      while (n < len) {
        const auto& w = words[rng() % 10];
        line += w;
        n += static_cast<std::int64_t>(w.size()) - static_cast<std::int64_t>(std::count(w.begin(), w.end(), '\\'));
      }
      line += "\"}\n";
      out << line;
      written += static_cast<std::int64_t>(line.size());
      text_bytes += n;
      ++docs;
    }
    ASSERT_TRUE(out.good());
  }
  const double gen_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto t1 = std::chrono::steady_clock::now();
  auto [status, peak_mib] = run_measured({neox::test::neox_binary(), "preprocess", "--input", dir + "/big.jsonl",
                                          "--output-prefix", dir + "/out", "--workers", "2", "--append-eod"},
                                         dir + "/log.txt");
  const double run_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  const std::string log = read_text(dir + "/log.txt");
  ASSERT_EQ(status, 0) << log;
  std::cout << "[ preprocess ] " << mb << " MiB jsonl, " << docs << " documents (generated in " << gen_s
            << " s): preprocessed in " << run_s << " s, " << static_cast<double>(mb) * 1.048576 / run_s
            << " MB/s, peak RSS " << peak_mib << " MiB\n"
            << log;
  {
    const auto ds = neox::IndexedDataset::open(dir + "/out_text_document");
    EXPECT_EQ(ds.num_documents(), docs);
    EXPECT_EQ(ds.num_tokens(), text_bytes + docs);  // bytes + one end-of-document each
  }
  // Under AddressSanitizer the quarantine and shadow memory dominate (575
  // MiB for 200 MiB of input): the bound is the Release build's to check.
  if (!kSanitized) {
    EXPECT_LT(peak_mib, 200.0) << "peak RSS of neox preprocess on " << mb << " MiB of input";
  }
  fs::remove_all(dir);
}

// A generated plain-text file of NEOX_TEST_PREPROCESS_TEXT_MB MiB (default
// 300; 16 in sanitizer builds) is one document, read in 1 MiB pieces: the
// dataset holds its bytes (byte tokenizer) and, in builds without
// sanitizers, the peak resident memory of `neox preprocess` stays under
// 150 MiB, half the input (reading it whole took the input plus 4 bytes
// per token). About 5 s on 2 cores.
TEST(Preprocess, LargePlainTextInBoundedMemory) {
  const std::int64_t mb = std::stoll(neox::test::env_or("NEOX_TEST_PREPROCESS_TEXT_MB", kSanitized ? "16" : "300"));
  const auto dir = temp_dir("preprocess", "largetext");
  struct statvfs vfs {};
  ASSERT_EQ(statvfs(dir.c_str(), &vfs), 0);
  const double free_gb = static_cast<double>(vfs.f_bavail) * vfs.f_frsize / 1e9;
  const double need_gb = 3.2 * static_cast<double>(mb) / 1024.0 + 0.2;  // input + uint16 output (2x)
  if (free_gb < need_gb) GTEST_SKIP() << "needs " << need_gb << " GB free in " << dir << ", has " << free_gb;

  const auto t0 = std::chrono::steady_clock::now();
  std::int64_t size = 0;
  {
    std::ofstream out(dir + "/big.txt", std::ios::binary);
    const std::string block = mixed_text(1u << 20, 21);
    const std::int64_t target = mb << 20;
    for (; size + static_cast<std::int64_t>(block.size()) <= target; size += static_cast<std::int64_t>(block.size()))
      out << block;
    ASSERT_TRUE(out.good());
  }
  const double gen_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto t1 = std::chrono::steady_clock::now();
  auto [status, peak_mib] = run_measured({neox::test::neox_binary(), "preprocess", "--input", dir + "/big.txt",
                                          "--output-prefix", dir + "/out", "--workers", "2", "--append-eod"},
                                         dir + "/log.txt");
  const double run_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  const std::string log = read_text(dir + "/log.txt");
  ASSERT_EQ(status, 0) << log;
  std::cout << "[ preprocess ] " << size / 1048576.0 << " MiB plain text (generated in " << gen_s
            << " s): preprocessed in " << run_s << " s, " << static_cast<double>(size) / 1e6 / run_s
            << " MB/s, peak RSS " << peak_mib << " MiB\n"
            << log;
  EXPECT_GE(pieces_of(log), size >> 20) << log;
  {
    // One document of the file's bytes and the end of document.
    const auto ds = neox::IndexedDataset::open(dir + "/out_text_document");
    ASSERT_EQ(ds.num_documents(), 1);
    ASSERT_EQ(ds.num_items(), 1);
    ASSERT_EQ(ds.num_tokens(), size + 1);
    std::ifstream in(dir + "/big.txt", std::ios::binary);
    std::string buf(1u << 20, '\0');
    std::vector<std::int32_t> ids(buf.size());
    std::int64_t at = 0, mismatches = 0;
    while (at < size) {
      const auto n = static_cast<std::int64_t>(std::min<std::int64_t>(size - at, buf.size()));
      in.read(buf.data(), n);
      ds.read(0, at, n, ids.data());
      for (std::int64_t i = 0; i < n; ++i) mismatches += ids[i] != (buf[i] & 0xff);
      at += n;
    }
    EXPECT_EQ(mismatches, 0);
    std::int32_t eod = -1;
    ds.read(0, size, 1, &eod);
    EXPECT_EQ(eod, 256);
  }
  if (!kSanitized) {
    EXPECT_LT(peak_mib, 150.0) << "peak RSS of neox preprocess on " << mb << " MiB of plain text";
  }
  fs::remove_all(dir);
}
