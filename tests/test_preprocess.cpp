// SPDX-License-Identifier: Apache-2.0
// `neox preprocess` (jsonl, gzip, zstd, plain text -> Megatron indexed
// datasets), `neox data inspect/merge`, and the LineReader under them.
// The expected .bin/.idx bytes are laid out here from the format
// description (core/include/neox/indexed_dataset.h), not by our writer.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>

#include "neox/indexed_dataset.h"
#include "neox/line_reader.h"
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

std::string gzip_bytes(const std::string& data) {
  z_stream z{};
  EXPECT_EQ(deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&z, data.size()) + 64, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

// With a content checksum, so that corrupted data is detected.
std::string zstd_bytes(const std::string& data) {
  ZSTD_CCtx* c = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
  std::string out(ZSTD_compressBound(data.size()), '\0');
  const std::size_t n = ZSTD_compress2(c, out.data(), out.size(), data.data(), data.size());
  EXPECT_FALSE(ZSTD_isError(n));
  ZSTD_freeCCtx(c);
  out.resize(n);
  return out;
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
  for (std::size_t i = 0; i < sizeof(T); ++i) s.push_back(static_cast<char>((static_cast<std::uint64_t>(v) >> (8 * i)) & 0xff));
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
  put<std::int64_t>(idx, 0);   // pointers: byte offsets in .bin
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
  write_file(dir + "/c.jsonl.gz", gzip_bytes(jsonl.substr(0, half)) + gzip_bytes(jsonl.substr(half)));
  write_file(dir + "/c.jsonl.zst", zstd_bytes(jsonl));
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
  write_file(dir + "/b.json.zst", zstd_bytes("{\"title\": \"T3\", \"text\": \"t3\"}"));
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
  const std::string gz = gzip_bytes(jsonl), zs = zstd_bytes(jsonl);
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
  auto r = run_neox("preprocess --input " + dir + "/p.jsonl --output-prefix " + dir +
                    "/out --progress-interval 0.000001");
  ASSERT_EQ(r.status, 0) << r.output;
  const std::regex line(R"(preprocess: (\d+) documents, \d+ docs/s, [0-9.]+ MB, [0-9.]+ MB/s, file 1/1\n)");
  std::vector<long> counts;
  for (std::sregex_iterator it(r.output.begin(), r.output.end(), line), end; it != end; ++it)
    counts.push_back(std::stol((*it)[1]));
  EXPECT_EQ(counts, (std::vector<long>{4096, 8192, 10000})) << r.output;
  EXPECT_EQ(r.output.find('\r'), std::string::npos);
}

TEST(LineReader, SplitsLinesAcrossBufferBoundaries) {
  const auto dir = temp_dir("preprocess", "lines");
  std::string big(3u << 20, 'q');  // longer than the 1 MiB buffers
  const std::string data = "a\r\n\nb\n" + big + "\nlast";
  for (const auto& [name, bytes] : std::vector<std::pair<std::string, std::string>>{
           {"p.txt", data}, {"p.gz", gzip_bytes(data)}, {"p.zst", zstd_bytes(data)}}) {
    write_file(dir + "/" + name, bytes);
    neox::LineReader r(dir + "/" + name);
    std::vector<std::string> lines;
    for (std::string l; r.next_line(l);) lines.push_back(l);
    ASSERT_EQ(lines.size(), 5u) << name;
    EXPECT_EQ(lines[0], "a");
    EXPECT_EQ(lines[1], "");
    EXPECT_EQ(lines[2], "b");
    EXPECT_EQ(lines[3], big);
    EXPECT_EQ(lines[4], "last");
    EXPECT_EQ(r.line_number(), 5);
    EXPECT_EQ(r.file_bytes_read(), static_cast<std::int64_t>(bytes.size()));
  }
  const std::string err = neox::test::error_of([&] { neox::LineReader r(dir + "/missing.gz"); });
  EXPECT_NE(err.find("missing.gz: cannot open"), std::string::npos) << err;
}

TEST(DataCommand, InspectAndMerge) {
  const auto dir = temp_dir("preprocess", "data");
  write_file(dir + "/a.jsonl", jsonl_of({"alpha", "beta"}));
  write_file(dir + "/b.jsonl", jsonl_of({"gamma"}));
  ASSERT_EQ(run_neox("preprocess --input " + dir + "/a.jsonl --output-prefix " + dir +
                     "/A --append-eod --progress-interval 0").status, 0);
  ASSERT_EQ(run_neox("preprocess --input " + dir + "/b.jsonl --output-prefix " + dir +
                     "/B --append-eod --progress-interval 0").status, 0);
  auto r = run_neox("data inspect " + dir + "/A_text_document --document 1");
  ASSERT_EQ(r.status, 0) << r.output;
  for (const char* want : {"dtype: uint16", "documents: 2", "tokens: 11", "largest token id: 256",
                           "document 1: 5 tokens; the first 5: 98 101 116 97 256", "decoded (byte): beta"})
    EXPECT_NE(r.output.find(want), std::string::npos) << want << "\n" << r.output;
  r = run_neox("data inspect " + dir + "/A_text_document --document 2");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("outside [0, 2)"), std::string::npos) << r.output;

  r = run_neox("data merge --input " + dir + "/A_text_document," + dir + "/B_text_document.idx --output-prefix " +
               dir + "/M");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("3 documents, 17 tokens (uint16)"), std::string::npos) << r.output;
  // The merge equals preprocessing both inputs in one run.
  ASSERT_EQ(run_neox("preprocess --input " + dir + "/a.jsonl," + dir + "/b.jsonl --output-prefix " + dir +
                     "/AB --append-eod --progress-interval 0").status, 0);
  EXPECT_EQ(read_text(dir + "/M.bin"), read_text(dir + "/AB_text_document.bin"));
  EXPECT_EQ(read_text(dir + "/M.idx"), read_text(dir + "/AB_text_document.idx"));
  r = run_neox("data merge --input " + dir + "/A_text_document," + dir + "/nothing --output-prefix " + dir + "/N");
  EXPECT_NE(r.status, 0);
  EXPECT_FALSE(fs::exists(dir + "/N.bin"));
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
  if (free_gb < need_gb)
    GTEST_SKIP() << "needs " << need_gb << " GB free in " << dir << ", has " << free_gb;

  // Documents of 200..4000 bytes of varied ASCII, JSON-escaped by hand.
  const auto t0 = std::chrono::steady_clock::now();
  std::int64_t docs = 0, text_bytes = 0;
  {
    std::ofstream out(dir + "/big.jsonl", std::ios::binary);
    std::mt19937 rng(7);
    const std::string words[] = {"the ", "model ", "trains ", "on ", "tokens, ", "and ", "\\\"quotes\\\" ",
                                 "newlines\\n", "data ", "1234 "};
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
