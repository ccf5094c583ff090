// SPDX-License-Identifier: Apache-2.0
// `neox generate`: Hugging Face's greedy continuations
// (../shared/testdata/hf/*/expected.json) from a Hugging Face directory and
// from a neox checkpoint, prompt files, text through a tokenizer, and the
// interactive mode. The generation loop itself: tests/unit/test_generation.cpp.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "test_support.h"

namespace {

using Ids = std::vector<std::int32_t>;
using Greedy = neox::test::GreedyCase;
Greedy greedy_case(const std::string& name) { return neox::test::hf_greedy_case(name); }

const std::string kHf = neox::test::testdata_dir() + "/hf/";

using Result = neox::test::CommandResult;
inline Result sh(const std::string& command) { return neox::test::run_command(command); }

std::string join(const Ids& ids) {
  std::string s;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(ids[i]);
  }
  return s;
}

const std::string kNeox = neox::test::neox_binary();

TEST(GenerationCommand, PrintsTheGreedyIds) {
  for (const std::string name : {"neox_tiny_parallel", "neox_tiny_sequential"}) {
    Greedy g = greedy_case(name);
    Result r = sh(kNeox + " generate --model " + kHf + name + "/hf --prompt-ids " + join(g.prompt) +
                  " --greedy --max-new-tokens 12");
    ASSERT_EQ(r.status, 0) << name << ":\n" << r.output;
    EXPECT_NE(r.output.find(join(g.continuation) + "\n"), std::string::npos) << name << ":\n" << r.output;
  }
}

TEST(GenerationCommand, NeoxCheckpointGivesTheSameIds) {
  Greedy g = greedy_case("neox_tiny_sequential");
  const std::string save = ::testing::TempDir() + "neox_generate_checkpoint";
  std::filesystem::remove_all(save);
  Result c = sh(kNeox + " convert --from-hf " + kHf + "neox_tiny_sequential/hf --out " + save);
  ASSERT_EQ(c.status, 0) << c.output;
  // stdout holds the ids only (log lines go to stderr)
  Result r = sh("(" + kNeox + " generate --model " + save + " --prompt-ids " + join(g.prompt) +
                " --greedy --max-new-tokens 12 2>/dev/null)");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output, join(g.continuation) + "\n");
  std::filesystem::remove_all(save);
}

TEST(GenerationCommand, InputFileGivesJsonLines) {
  Greedy g = greedy_case("neox_tiny_parallel");
  const std::string in = ::testing::TempDir() + "neox_generate_prompts.txt";
  const std::string out = ::testing::TempDir() + "neox_generate_samples.jsonl";
  std::ofstream(in) << join(g.prompt) << "\n\n  " << join(Ids(g.prompt.begin(), g.prompt.begin() + 2)) << "\r\n";
  Result r = sh(kNeox + " generate --model " + kHf + "neox_tiny_parallel/hf --input " + in + " --output " + out +
                " --max-new-tokens 5 --num-samples 2 --top-k 20 --seed 3");
  ASSERT_EQ(r.status, 0) << r.output;
  std::ifstream f(out);
  std::vector<nlohmann::json> lines;
  for (std::string line; std::getline(f, line);) lines.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(lines.size(), 4u);  // two prompts (the empty line skipped), two samples each
  EXPECT_EQ(lines[0]["context"], join(g.prompt));
  EXPECT_EQ(lines[2]["context"], join(Ids(g.prompt.begin(), g.prompt.begin() + 2)));
  for (const auto& j : lines) {
    EXPECT_TRUE(j["text"].is_null());  // no tokenizer for this vocabulary
    EXPECT_EQ(j["length"], j["tokens"].size());
    EXPECT_LE(j["length"].get<int>(), 5);
    EXPECT_TRUE(j["finished"].is_boolean());
  }

  // text prompts through the byte tokenizer; a random model's bytes are
  // rarely UTF-8, and the JSON stays valid
  std::ofstream(in) << "Once upon a time\nhello\n";
  r = sh(kNeox + " generate --model " + kHf + "neox_tiny_parallel/hf --tokenizer byte --input " + in + " --output " +
         out + " --max-new-tokens 8 --temperature 2 --eod-id=-1");
  ASSERT_EQ(r.status, 0) << r.output;
  std::ifstream f2(out);
  lines.clear();
  for (std::string line; std::getline(f2, line);) lines.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0]["context"], "Once upon a time");
  EXPECT_TRUE(lines[1]["text"].is_string());
  EXPECT_EQ(lines[1]["length"], 8);
  for (auto t : lines[1]["tokens"]) EXPECT_LT(t.get<int>(), 257);
  std::filesystem::remove(in);
  std::filesystem::remove(out);
}

TEST(GenerationCommand, TextNeedsATokenizer) {
  const std::string model = kHf + "neox_tiny_parallel/hf";
  Result r = sh(kNeox + " generate --model " + model + " --prompt hello --max-new-tokens 3");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("no built-in tokenizer"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("--prompt-ids"), std::string::npos) << r.output;

  // with the byte tokenizer chosen, text goes in and (ids < 257 only) comes out
  r = sh(kNeox + " generate --model " + model +
         " --tokenizer byte --prompt hello --max-new-tokens 4 --seed 1 --eod-id=-1");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("generated 4 tokens"), std::string::npos) << r.output;

  // unconditional: from config.json's eos_token_id
  r = sh(kNeox + " generate --model " + model + " --greedy --max-new-tokens 3 --num-samples 2");
  EXPECT_EQ(r.status, 0) << r.output;
  r = sh(kNeox + " generate --model " + model + " --prompt-ids 1,x");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("'x' is not a token id"), std::string::npos) << r.output;
}

TEST(GenerationCommand, InteractiveReadsPromptsUntilEof) {
  Greedy g = greedy_case("neox_tiny_sequential");
  Result r = sh("printf '" + join(g.prompt) + "\\nbad\\n" + join(g.prompt) + "\\n' | " + kNeox + " generate --model " +
                kHf + "neox_tiny_sequential/hf --interactive --greedy --max-new-tokens 12");
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string want = join(g.continuation) + "\n";
  const auto first = r.output.find(want);
  ASSERT_NE(first, std::string::npos) << r.output;
  EXPECT_NE(r.output.find(want, first + 1), std::string::npos) << "second prompt:\n" << r.output;
  EXPECT_NE(r.output.find("'bad' is not a token id"), std::string::npos) << r.output;
}

}  // namespace
