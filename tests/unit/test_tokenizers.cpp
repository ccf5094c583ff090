// SPDX-License-Identifier: Apache-2.0
// Tokenizers: the byte-level BPE (tokenizer.json and GPT-2 files) against
// Hugging Face tokenizers' encodings (../shared/testdata/tokenizers), a
// variant of that tokenizer.json with an NFC normalizer, add_prefix_space
// and added tokens of every kind against ids that tokenizers 0.23.3 gave,
// decode(encode(x)) on random Unicode strings, the char-level tokenizer,
// encode_batch on threads and errors. `neox tokenize`:
// tests/cli/test_tokenize_command.cpp.
#include <gtest/gtest.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

#include "test_support.h"

#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "neox/error.h"
#include "neox/registry.h"
#include "neox/text/bpe_tokenizer.h"
#include "neox/text/char_tokenizer.h"
#include "neox/text/tokenizers.h"

namespace {

using Ids = std::vector<std::int32_t>;
using json = nlohmann::json;
using neox::test::error_of;

const std::string kDir = neox::test::testdata_dir() + "/tokenizers/";
const std::string kJson = kDir + "bpe_bytelevel_1k.json";
const std::string kVocab = kDir + "gpt2_format_1k/vocab.json";
const std::string kMerges = kDir + "gpt2_format_1k/merges.txt";

json read_json(const std::string& path) {
  std::ifstream in(path);
  return json::parse(in);
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

std::string utf8(char32_t cp) {
  std::string out;
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return out;
}

// Random text mixing what tokenizers find hard: ASCII words and contractions,
// digits, runs of every kind of whitespace (U+00A0, U+3000, U+2028, ...),
// combining marks (NFC composes or reorders them), Hangul jamo, emoji with
// skin tones and ZWJ, CJK, Arabic, Devanagari, and, 10% of the time when
// `any_code_point`, any code point but a surrogate.
std::string random_text(std::mt19937& rng, bool any_code_point) {
  static const std::vector<std::u32string> pools = {
      U"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
      U"0123456789",
      U" \t\n\r\v\f\u00a0\u1680\u2003\u2028\u2029\u202f\u3000\u0085",
      U"'sdtmrevl",
      U".,;:!?-_()[]{}<>|\"`~@#$%^&*+=/\\",
      U"\u00e9\u00e8\u00e7\u00e0\u00fc\u00f6\u00f1\u00c5\u00e5\u00df\u212b\u1e0b",
      U"\u0301\u0308\u0327\u030a\u0323\u0316\u05b0\u0903",
      U"\u1100\u1161\u11a8\uac00",
      U"\u4e2d\u6587\u5b57\u7b26\u65e5\u672c\u8a9e\ud55c\uad6d\uc5b4",
      U"\U0001f916\U0001f680\U0001f44d\U0001f3fd\u200d\U0001f469\ufe0f",
      U"\u0661\u0662\u2167\u00bd\u00b2\u03b1\u03b2\u0394\u0928\u093f\u0937\u0627\u0644",
      U"\u200b\ufeff\u180e\u00ad",
  };
  std::uniform_int_distribution<int> len_dist(0, 48), pick(0, static_cast<int>(pools.size()) - 1), repeat(1, 4),
      percent(0, 99);
  std::uniform_int_distribution<std::uint32_t> any(1, 0x10FFFF);
  std::string out;
  const int n = len_dist(rng);
  for (int i = 0; i < n; ++i) {
    if (any_code_point && percent(rng) < 10) {
      std::uint32_t cp = any(rng);
      if (cp >= 0xD800 && cp < 0xE000) cp -= 0x800;
      out += utf8(cp);
      continue;
    }
    const auto& pool = pools[pick(rng)];
    std::uniform_int_distribution<std::size_t> c(0, pool.size() - 1);
    const std::string s = utf8(pool[c(rng)]);
    for (int r = repeat(rng); r > 0; --r) out += s;
  }
  return out;
}

// ICU's NFC (of its Unicode version; the tests use it on characters of
// Unicode 9.0 and before, where it agrees with Hugging Face's).
std::string icu_nfc(const std::string& s) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* nfc = icu::Normalizer2::getNFCInstance(status);
  std::string out;
  nfc->normalize(icu::UnicodeString::fromUTF8(s), status).toUTF8String(out);
  EXPECT_TRUE(U_SUCCESS(status));
  return out;
}

// The 1k tokenizer.json with an NFC normalizer, add_prefix_space and added
// tokens using every flag, written to `dir`.
std::string write_variant(const std::string& dir) {
  json j = read_json(kJson);
  j["normalizer"] = {{"type", "NFC"}};
  j["pre_tokenizer"]["add_prefix_space"] = true;
  const auto added = [](int id, const std::string& content, bool single_word, bool lstrip, bool rstrip, bool normalized,
                        bool special) {
    return json{{"id", id},         {"content", content},       {"single_word", single_word}, {"lstrip", lstrip},
                {"rstrip", rstrip}, {"normalized", normalized}, {"special", special}};
  };
  j["added_tokens"].push_back(added(1000, "  ", false, false, false, true, false));
  j["added_tokens"].push_back(added(1001, "    ", false, false, false, true, false));
  j["added_tokens"].push_back(added(1002, "\u00e9\n", false, false, false, true, false));
  j["added_tokens"].push_back(added(1003, "[MASK]", false, true, true, false, true));
  j["added_tokens"].push_back(added(1004, "word", true, false, false, false, false));
  j["added_tokens"].push_back(added(1005, "e\u0301x", false, false, false, false, false));
  const std::string path = dir + "/variant.json";
  write_text(path, j.dump());
  return path;
}

// --- reference encodings ---------------------------------------------------

TEST(BpeTokenizer, HfJsonMatchesTheReferenceEncodings) {
  auto tok = neox::BpeTokenizer::from_hf_json(kJson);
  EXPECT_EQ(tok->name(), "HFTokenizer");
  EXPECT_EQ(tok->vocab_size(), 1000);
  EXPECT_EQ(tok->eod_id(), 0);
  const json expected = read_json(kDir + "bpe_bytelevel_1k.expected.json");
  ASSERT_GE(expected["encodings"].size(), 10u);
  for (const auto& e : expected["encodings"]) {
    const std::string text = e["text"];
    EXPECT_EQ(tok->encode(text), e["ids"].get<Ids>()) << text;
    EXPECT_EQ(tok->decode(e["ids"].get<Ids>()), e["decoded"].get<std::string>()) << text;
  }
}

TEST(BpeTokenizer, Gpt2FilesMatchTheReferenceEncodings) {
  auto tok = neox::BpeTokenizer::from_gpt2_files(kVocab, kMerges);
  EXPECT_EQ(tok->name(), "GPT2BPETokenizer");
  EXPECT_EQ(tok->vocab_size(), 1000);
  EXPECT_EQ(tok->eod_id(), 0);
  const json expected = read_json(kDir + "bpe_bytelevel_1k.expected.json");
  int compared = 0;
  for (const auto& e : expected["encodings"]) {
    const std::string text = e["text"];
    // The GPT-2 files have no added tokens: "<|endoftext|>" in text is text.
    if (text.find("<|") != std::string::npos) continue;
    EXPECT_EQ(tok->encode(text), e["ids"].get<Ids>()) << text;
    EXPECT_EQ(tok->decode(e["ids"].get<Ids>()), e["decoded"].get<std::string>()) << text;
    ++compared;
  }
  EXPECT_GE(compared, 10);
}

// Ids from Hugging Face tokenizers 0.23.3: Tokenizer.from_file(variant).encode(text).ids
// and decode(ids, skip_special_tokens=False/True), variant as write_variant makes it.
TEST(BpeTokenizer, NfcPrefixSpaceAndAddedTokensMatchHuggingFace) {
  const std::string dir = neox::test::temp_dir("tok", "variant");
  auto tok = neox::BpeTokenizer::from_hf_json(write_variant(dir));
  EXPECT_EQ(tok->vocab_size(), 1006);
  struct Case {
    std::string text;
    Ids ids;
    std::string decoded, decoded_skipping_special;
  };
  const std::vector<Case> cases = {
      {"a [MASK] b", {261, 1003, 301}, " a[MASK] b", " a b"},
      {"  [MASK]  x", {1003, 222, 89}, "[MASK] x", " x"},
      {"word words sword word",
       {1004, 275, 269, 69, 84, 281, 88, 269, 69, 222, 1004},
       "word words sword word",
       "word words sword word"},
      {"e\u0301x \u00e9\nx", {1005, 222, 1002, 222, 89}, "e\u0301x \u00e9\n x", "e\u0301x \u00e9\n x"},
      {"    x  y   z", {1001, 222, 89, 1000, 222, 90, 1000, 222, 91}, "     x   y   z", "     x   y   z"},
      {"\u212bA\u030a cafe\u0301",
       {222, 129, 229, 129, 229, 270, 66, 71, 129, 104},
       " \u00c5\u00c5 caf\u00e9",
       " \u00c5\u00c5 caf\u00e9"},
      {"x[MASK][MASK] word<|endoftext|>word",
       {222, 89, 1003, 1003, 1004, 0, 1004},
       " x[MASK][MASK]word<|endoftext|>word",
       " xwordword"},
      // U+08D1 is newer than Unicode 9.0: HF's NFC does not reorder it.
      {"\u030a\u08d1 \u1e0b\u0323",
       {222, 138, 234, 158, 98, 241, 222, 159, 118, 237, 138, 231},
       " \u030a\u08d1 \u1e0d\u0307",
       " \u030a\u08d1 \u1e0d\u0307"},
      {"Don't", {501, 264, 8, 85}, " Don't", " Don't"},
      {"<|padding|> \u00e9\n", {1, 222, 1002}, "<|padding|> \u00e9\n", " \u00e9\n"},
      {"", {}, "", ""},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(tok->encode(c.text), c.ids) << c.text;
    EXPECT_EQ(tok->decode(c.ids), c.decoded) << c.text;
    EXPECT_EQ(tok->decode(c.ids, true), c.decoded_skipping_special) << c.text;
  }
}

// Words longer than 64 bytes take HF's heap-based merge loop (shorter ones a
// simpler loop). Ids from tokenizers 0.23.3 with the 1k tokenizer.json.
TEST(BpeTokenizer, LongWordsMatchHuggingFace) {
  auto tok = neox::BpeTokenizer::from_hf_json(kJson);
  EXPECT_EQ(tok->encode("Permissionisherebygrantedfreeofchargetoanypersonobtainingacopyofthissoftware"),
            (Ids{49,  345, 272, 399, 609, 479, 67,  90,  660, 282, 791, 752, 356, 739, 732,
                 671, 821, 84,  264, 80,  67,  528, 293, 66,  931, 90,  752, 802, 556, 401}));
  EXPECT_EQ(tok->encode(std::string(70, ' ') + "end"), (Ids{647, 647, 647, 647, 350, 222, 646}));
  std::string e_acute;
  Ids e_acute_ids;
  for (int i = 0; i < 40; ++i) {
    e_acute += "\u00e9";
    e_acute_ids.insert(e_acute_ids.end(), {129, 104});
  }
  EXPECT_EQ(tok->encode(e_acute), e_acute_ids);
  EXPECT_EQ(tok->encode(std::string(100, 'x')), Ids(100, 89));
}

TEST(BpeTokenizer, MergesInPairFormEqualTheStringForm) {
  const std::string dir = neox::test::temp_dir("tok", "pairs");
  json j = read_json(kJson);
  json pairs = json::array();
  for (const auto& m : j["model"]["merges"]) {
    const std::string s =
        m.is_string() ? m.get<std::string>() : m[0].get<std::string>() + " " + m[1].get<std::string>();
    pairs.push_back(s);  // the string form "a b"
  }
  j["model"]["merges"] = pairs;
  write_text(dir + "/strings.json", j.dump());
  auto from_strings = neox::BpeTokenizer::from_hf_json(dir + "/strings.json");
  auto from_pairs = neox::BpeTokenizer::from_hf_json(kJson);  // the test data has the pair form
  ASSERT_TRUE(read_json(kJson)["model"]["merges"][0].is_array());
  std::mt19937 rng(7);
  for (int i = 0; i < 300; ++i) {
    const std::string text = random_text(rng, true);
    EXPECT_EQ(from_strings->encode(text), from_pairs->encode(text));
  }
}

// --- round trips -----------------------------------------------------------

// Without a normalizer byte-level BPE loses nothing: decode(encode(x)) == x
// for any valid UTF-8 x (here: 3000 random strings, seed 1234, with no
// added-token text in them).
TEST(BpeTokenizer, DecodeOfEncodeIsTheTextForRandomUnicode) {
  auto hf = neox::BpeTokenizer::from_hf_json(kJson);
  auto gpt2 = neox::BpeTokenizer::from_gpt2_files(kVocab, kMerges);
  std::mt19937 rng(1234);
  for (int i = 0; i < 3000; ++i) {
    const std::string text = random_text(rng, true);
    ASSERT_EQ(hf->decode(hf->encode(text)), text) << "string " << i;
    ASSERT_EQ(gpt2->decode(gpt2->encode(text)), text) << "string " << i;
    ASSERT_EQ(hf->encode(text), gpt2->encode(text)) << "string " << i;
  }
}

// With the NFC normalizer and add_prefix_space: decode(encode(x)) ==
// " " + NFC(x) when x does not start with a space, NFC(x) otherwise (x has
// no added-token text; its code points are of Unicode 9.0 or before, where
// HF's NFC tables and ICU's agree).
TEST(BpeTokenizer, DecodeOfEncodeIsTheNfcTextWithTheNfcNormalizer) {
  const std::string dir = neox::test::temp_dir("tok", "nfc");
  json j = read_json(kJson);
  j["normalizer"] = {{"type", "NFC"}};
  j["pre_tokenizer"]["add_prefix_space"] = true;
  write_text(dir + "/nfc.json", j.dump());
  auto tok = neox::BpeTokenizer::from_hf_json(dir + "/nfc.json");
  std::mt19937 rng(99);
  int changed_by_nfc = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string text = random_text(rng, false);
    const std::string nfc = icu_nfc(text);
    changed_by_nfc += nfc != text;
    const std::string expected = text.empty() || text[0] == ' ' ? nfc : " " + nfc;
    ASSERT_EQ(tok->decode(tok->encode(text)), expected) << "string " << i;
  }
  EXPECT_GT(changed_by_nfc, 300);  // the strings do exercise normalization
}

// --- thread safety ---------------------------------------------------------

TEST(BpeTokenizer, EncodeBatchOnThreadsEqualsEncodeOneByOne) {
  auto tok = neox::BpeTokenizer::from_hf_json(kJson);
  std::mt19937 rng(5);
  std::vector<std::string> texts;
  for (int i = 0; i < 2000; ++i) texts.push_back(random_text(rng, true));
  std::vector<std::string_view> views(texts.begin(), texts.end());
  std::vector<Ids> expected;
  {
    auto fresh = neox::BpeTokenizer::from_hf_json(kJson);  // its own caches
    for (const auto& t : texts) expected.push_back(fresh->encode(t));
  }
  for (int threads : {1, 3, 8}) EXPECT_EQ(neox::encode_batch(*tok, views, threads), expected) << threads;
}

// Tokenizers with different settings share no cached words, even when one
// thread uses more of them than it keeps caches for.
TEST(BpeTokenizer, InterleavedTokenizersKeepTheirOwnWords) {
  const std::string dir = neox::test::temp_dir("tok", "interleaved");
  json plain = read_json(kJson), prefixed = plain;
  prefixed["pre_tokenizer"]["add_prefix_space"] = true;
  write_text(dir + "/prefixed.json", prefixed.dump());
  std::vector<std::unique_ptr<neox::BpeTokenizer>> toks;
  for (int i = 0; i < 6; ++i) toks.push_back(neox::BpeTokenizer::from_hf_json(i % 2 ? dir + "/prefixed.json" : kJson));
  const Ids plain_ids = toks[0]->encode("Hello world"), prefixed_ids = toks[1]->encode("Hello world");
  ASSERT_NE(plain_ids, prefixed_ids);
  for (int round = 0; round < 3; ++round)
    for (int i = 0; i < 6; ++i) EXPECT_EQ(toks[i]->encode("Hello world"), i % 2 ? prefixed_ids : plain_ids);
}

// --- errors ----------------------------------------------------------------

TEST(BpeTokenizer, ErrorsNameTheFileAndWhatIsWrong) {
  const std::string dir = neox::test::temp_dir("tok", "errors");
  std::string msg = error_of([&] { neox::BpeTokenizer::from_hf_json(dir + "/missing.json"); });
  EXPECT_NE(msg.find(dir + "/missing.json: cannot open"), std::string::npos) << msg;

  write_text(dir + "/bad.json", "{\"model\": {\"vocab\": {\"a\": 0,}}");
  msg = error_of([&] { neox::BpeTokenizer::from_hf_json(dir + "/bad.json"); });
  EXPECT_NE(msg.find(dir + "/bad.json: not valid JSON"), std::string::npos) << msg;

  json j = read_json(kJson);
  j["model"]["type"] = "WordPiece";
  write_text(dir + "/wordpiece.json", j.dump());
  msg = error_of([&] { neox::BpeTokenizer::from_hf_json(dir + "/wordpiece.json"); });
  EXPECT_NE(msg.find("model.type \"WordPiece\" is not supported"), std::string::npos) << msg;

  j = read_json(kJson);
  j["model"]["merges"][3] = json::array({"Ġ", "nothing-like-this"});
  write_text(dir + "/merge.json", j.dump());
  msg = error_of([&] { neox::BpeTokenizer::from_hf_json(dir + "/merge.json"); });
  EXPECT_NE(msg.find("model.merges[3]: token \"nothing-like-this\" is not in the vocabulary"), std::string::npos)
      << msg;

  write_text(dir + "/merges.txt", "#version: 0.2\nĠ t\nĠtoo many parts\n");
  msg = error_of([&] { neox::BpeTokenizer::from_gpt2_files(kVocab, dir + "/merges.txt"); });
  EXPECT_NE(msg.find(dir + "/merges.txt:3: \"Ġtoo many parts\" is not two tokens"), std::string::npos) << msg;

  msg = error_of([&] { neox::BpeTokenizer::from_gpt2_files(dir + "/none.json", kMerges); });
  EXPECT_NE(msg.find(dir + "/none.json: cannot open"), std::string::npos) << msg;

  auto tok = neox::BpeTokenizer::from_hf_json(kJson);
  msg = error_of([&] { tok->decode({41, 5000}); });
  EXPECT_NE(msg.find("id 5000 at position 1 is not in the vocabulary"), std::string::npos) << msg;
  msg = error_of([&] { tok->decode({-1}); });
  EXPECT_NE(msg.find("id -1 at position 0"), std::string::npos) << msg;
  msg = error_of([&] { tok->encode(std::string("ok \xC3\x28 bad")); });
  EXPECT_NE(msg.find("not valid UTF-8 (byte offset 3)"), std::string::npos) << msg;

  msg = error_of([&] { neox::make_tokenizer("SentencePieceTokenizer", "x", ""); });
  EXPECT_NE(msg.find("unknown tokenizer type \"SentencePieceTokenizer\" (known: HFTokenizer, GPT2BPETokenizer"),
            std::string::npos)
      << msg;
  msg = error_of([&] { neox::make_tokenizer("GPT2BPETokenizer", kVocab, ""); });
  EXPECT_NE(msg.find("needs a vocab file (vocab.json) and a merge file"), std::string::npos) << msg;
}

// Decoding bytes that are not UTF-8 (a character split between requested
// ids) gives U+FFFD per maximal ill-formed part, as HF's from_utf8_lossy.
TEST(BpeTokenizer, DecodeReplacesBrokenUtf8LikeHuggingFace) {
  auto tok = neox::BpeTokenizer::from_hf_json(kJson);
  const Ids robot = tok->encode("\U0001f916");  // 4 bytes, one id each in this small vocabulary
  ASSERT_EQ(robot.size(), 4u);
  EXPECT_EQ(tok->decode({robot[0]}), "\ufffd");
  EXPECT_EQ(tok->decode({robot[0], robot[1], robot[2]}), "\ufffd");
  EXPECT_EQ(tok->decode({robot[1], robot[2]}), "\ufffd\ufffd");
  EXPECT_EQ(tok->decode(robot), "\U0001f916");
}

// --- the factory and the other tokenizers ----------------------------------

TEST(Tokenizers, FactoryMakesEveryType) {
  auto hf = neox::make_tokenizer("HFTokenizer", kJson, "");
  auto gpt2 = neox::make_tokenizer("GPT2BPETokenizer", kVocab, kMerges);
  auto chars = neox::make_tokenizer("CharLevelTokenizer", "", "");
  auto bytes = neox::make_tokenizer("byte", "", "");
  EXPECT_EQ(hf->encode("Hello world"), (Ids{41, 70, 398, 80, 275, 269, 468}));
  EXPECT_EQ(gpt2->encode("Hello world"), (Ids{41, 70, 398, 80, 275, 269, 468}));
  EXPECT_EQ(chars->name(), "CharLevelTokenizer");
  EXPECT_EQ(bytes->name(), "byte");
}

TEST(CharTokenizer, OneIdPerUtf8ByteLikeGptNeoX) {
  neox::CharTokenizer tok;
  EXPECT_EQ(tok.vocab_size(), 512);
  EXPECT_EQ(tok.eod_id(), 0);
  // GPT-NeoX: list(np.frombuffer(text.encode('utf-8'), dtype=np.uint8))
  EXPECT_EQ(tok.encode("Hi \u00e9\n"), (Ids{72, 105, 32, 0xC3, 0xA9, 10}));
  EXPECT_EQ(tok.decode(tok.encode("Hi \u00e9\n")), "Hi \u00e9\n");
  EXPECT_EQ(tok.decode({72, 0, 105}), "Hi");        // the end-of-document token decodes to nothing
  EXPECT_EQ(tok.decode({0x100 + 0x41}), "\u0141");  // chr(321), as GPT-NeoX's detokenize
  std::string msg = error_of([&] { tok.decode({512}); });
  EXPECT_NE(msg.find("id 512 at position 0 is outside [0, 512)"), std::string::npos) << msg;
}

// A tokenizer plugin (tests/plugins/word_tokenizer.cpp) made from a
// [tokenizer] table: the type names the plugin, vocab_file and merge_file
// reach it with its own [plugins.options.<name>] table.
TEST(TokenizerPlugins, TheTypeNamesThePluginWhichGetsTheFilesAndItsOptions) {
  const std::string dir = neox::test::temp_dir("tok", "plugin");
  write_text(dir + "/words.txt", "<eod>\nhello\nworld\n<unk>\n");
  neox::PluginRegistry registry({neox::test::test_plugin_dir()});
  neox::Options options("plugins.options.test-words");
  options.set("lowercase", true);
  auto tok = neox::make_tokenizer({"test-words", dir + "/words.txt", ""}, "t.toml", &registry, options);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->name(), "test-words");
  EXPECT_EQ(tok->vocab_size(), 4);
  EXPECT_EQ(tok->eod_id(), 0);
  EXPECT_EQ(tok->encode("Hello  WORLD\nhello"), (Ids{1, 2, 1}));
  EXPECT_EQ(tok->decode({2, 1}), "world hello");

  // The plugin's own errors and option checks come back naming it.
  std::string msg = error_of([&] { tok->encode("hello there"); });
  EXPECT_NE(msg.find("\"there\" is not in the vocabulary"), std::string::npos) << msg;
  options.set("colour", std::string("red"));
  msg = error_of([&] { neox::make_tokenizer({"test-words", dir + "/words.txt", ""}, "t.toml", &registry, options); });
  EXPECT_NE(msg.find("t.toml: tokenizer (test-words): tokenizer plugin 'test-words'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("plugins.options.test-words.colour"), std::string::npos) << msg;

  // A file that is not there is named with its key before the plugin runs.
  msg = error_of([&] { neox::make_tokenizer({"test-words", dir + "/nope.txt", ""}, "t.toml", &registry); });
  EXPECT_NE(msg.find("t.toml: tokenizer.vocab_file: " + dir + "/nope.txt: no such file"), std::string::npos) << msg;
  // No such plugin: the registry says what it found.
  msg = error_of([&] { neox::make_tokenizer({"no-such-words", "", ""}, "t.toml", &registry); });
  EXPECT_NE(msg.find("no tokenizer plugin named 'no-such-words'"), std::string::npos) << msg;
  // Not a plugin name either.
  msg = error_of([&] { neox::make_tokenizer({"WordPiece", "", ""}, "t.toml", &registry); });
  EXPECT_NE(msg.find("tokenizer.type \"WordPiece\" is neither a built-in tokenizer (HFTokenizer, GPT2BPETokenizer, "
                     "CharLevelTokenizer, byte) nor the name of a tokenizer plugin"),
            std::string::npos)
      << msg;
  // Without a registry only the built-in types exist.
  msg = error_of([&] { neox::make_tokenizer({"test-words", dir + "/words.txt", ""}, "t.toml"); });
  EXPECT_NE(msg.find("unknown tokenizer type \"test-words\""), std::string::npos) << msg;

  // A checkpoint keeps a plugin's files under their own names.
  const auto files = neox::tokenizer_files({"test-words", dir + "/words.txt", "/x/extra.bin"});
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(files[0].key, "vocab_file");
  EXPECT_EQ(files[0].name, "words.txt");
  EXPECT_EQ(files[1].key, "merge_file");
  EXPECT_EQ(files[1].name, "extra.bin");
  EXPECT_TRUE(neox::tokenizer_files({"byte", "", ""}).empty());
  msg = error_of([&] { neox::tokenizer_files({"test-words", "/a/words.txt", "/b/words.txt"}); });
  EXPECT_NE(msg.find("the same file name, words.txt"), std::string::npos) << msg;
}

}  // namespace
