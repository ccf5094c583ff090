// SPDX-License-Identifier: Apache-2.0
// `neox tokenize`: text, ids, jsonl and line files in and out with the
// reference tokenizers of ../shared/testdata/tokenizers, errors naming the id
// or file; and `neox generate --tokenizer FILE`. The tokenizers themselves:
// tests/unit/test_tokenizers.cpp.
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "test_support.h"

namespace {

const std::string kDir = neox::test::testdata_dir() + "/tokenizers/";
const std::string kJson = kDir + "bpe_bytelevel_1k.json";
const std::string kVocab = kDir + "gpt2_format_1k/vocab.json";
const std::string kMerges = kDir + "gpt2_format_1k/merges.txt";

TEST(TokenizeCommand, EncodesAndDecodes) {
  auto r =
      neox::test::run_neox("tokenize --tokenizer-type HFTokenizer --vocab-file " + kJson + " --text 'Hello world'");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output, "41 70 398 80 275 269 468\n");

  r = neox::test::run_neox("tokenize --tokenizer-type GPT2BPETokenizer --vocab-file " + kVocab + " --merge-file " +
                           kMerges + " --ids '41, 70, 398, 80, 275, 269, 468'");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output, "Hello world\n");

  const std::string dir = neox::test::temp_dir("tok", "cli");
  std::ofstream(dir + "/docs.jsonl") << "{\"text\": \"Hello world\"}\n{\"text\": \"<|endoftext|>after the end\"}\n";
  r = neox::test::run_neox("tokenize --tokenizer-type HFTokenizer --vocab-file " + kJson + " --input " + dir +
                           "/docs.jsonl --jsonl --threads 2 --output " + dir + "/ids.txt");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(neox::test::read_text(dir + "/ids.txt"), "41 70 398 80 275 269 468\n0 66 71 696 266 222 646\n");

  r = neox::test::run_neox("tokenize --tokenizer-type HFTokenizer --vocab-file " + kJson + " --input " + dir +
                           "/ids.txt --lines --decode --skip-special-tokens");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output, "\"Hello world\"\n\"after the end\"\n");

  r = neox::test::run_neox("tokenize --tokenizer-type HFTokenizer --vocab-file " + kJson + " --ids '1 5000'");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("id 5000 at position 1 is not in the vocabulary"), std::string::npos) << r.output;

  r = neox::test::run_neox("tokenize --tokenizer-type HFTokenizer --vocab-file " + dir + "/nope.json --text x");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find(dir + "/nope.json: cannot open"), std::string::npos) << r.output;
}

// `neox generate --tokenizer FILE` loads the tokenizer.json and refuses one
// larger than the model's vocabulary (512 here, the tokenizer has 1000).
TEST(TokenizeCommand, GenerateTakesATokenizerJsonAndChecksItsSize) {
  const auto r =
      neox::test::run_neox("generate --model " + neox::test::testdata_dir() + "/hf/neox_tiny_parallel/hf --tokenizer " +
                           kJson + " --prompt Hello --max-new-tokens 2");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("the model's vocabulary (512) is smaller than the HFTokenizer tokenizer's (1000)"),
            std::string::npos)
      << r.output;
}

}  // namespace
