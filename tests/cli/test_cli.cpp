// SPDX-License-Identifier: Apache-2.0
// The neox command line, run as a user would run it.
#include <gtest/gtest.h>

#include "test_support.h"

#include <sys/wait.h>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "neox/io/safetensors.h"

namespace {

using Result = neox::test::CommandResult;
Result run(const std::string& args) { return neox::test::run_neox(args); }

std::string last_line(const std::string& s) {
  std::string t = s;
  while (!t.empty() && t.back() == '\n') t.pop_back();
  auto pos = t.rfind('\n');
  return pos == std::string::npos ? t : t.substr(pos + 1);
}

const std::string kHf = neox::test::testdata_dir() + "/hf/";

class ScoreCommand : public ::testing::TestWithParam<std::string> {};

TEST_P(ScoreCommand, PrintsTheReferenceLossAndWritesLogits) {
  const std::string out = ::testing::TempDir() + "neox_score_" + GetParam() + ".safetensors";
  Result r = run("score --model " + kHf + GetParam() + "/hf --tokens " + kHf + GetParam() +
                 "/forward.safetensors --out " + out);
  ASSERT_EQ(r.status, 0) << r.output;
  std::string line = last_line(r.output);
  ASSERT_EQ(line.rfind("loss ", 0), 0u) << r.output;
  const double loss = std::stod(line.substr(5));
  std::ifstream in(kHf + GetParam() + "/expected.json");
  const double ref = nlohmann::json::parse(in)["loss"].get<double>();
  EXPECT_LT(std::abs(loss - ref) / ref, 1e-5) << loss << " vs " << ref;

  auto logits = neox::SafeTensorsFile::open(out);
  auto ref_logits = neox::SafeTensorsFile::open(kHf + GetParam() + "/forward.safetensors");
  EXPECT_EQ(logits.info("logits").dtype, neox::DType::f32);
  EXPECT_EQ(logits.info("logits").shape, ref_logits.info("logits").shape);
  std::filesystem::remove(out);
}

INSTANTIATE_TEST_SUITE_P(Cases, ScoreCommand, ::testing::Values("neox_tiny_parallel", "neox_tiny_sequential"));

TEST(ScoreCommand, MissingModelIsAClearError) {
  Result r = run("score --model /nonexistent/model --tokens x.safetensors --out y.safetensors");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("/nonexistent/model/config.json: cannot open"), std::string::npos) << r.output;
}

TEST(PluginsCommand, ListsTheBuiltInPlugins) {
  Result r = run("plugins");
  ASSERT_EQ(r.status, 0) << r.output;
  for (const char* line : {"backend\tcpu\t", "comm\tlocal\t", "optimizer\tadamw\t"})
    EXPECT_NE(r.output.find(line), std::string::npos) << line << " not in:\n" << r.output;
}

TEST(PluginsCommand, CheckReportsADescriptorOrTheRejection) {
  Result ok = run("plugins --check " + neox::test::build_plugin_dir() + "/neox_backend_cpu.so");
  EXPECT_EQ(ok.status, 0) << ok.output;
  EXPECT_NE(ok.output.find("name:        cpu"), std::string::npos) << ok.output;
  Result bad = run("plugins --check /nonexistent/neox_backend_x.so");
  EXPECT_EQ(bad.status, 1);
  EXPECT_NE(bad.output.find("rejected: /nonexistent/neox_backend_x.so: no such file"), std::string::npos) << bad.output;
}

TEST(ConfigCommand, ReferenceIsTheCommittedConfigsReadme) {
  Result r = run("config --reference");
  ASSERT_EQ(r.status, 0);
  std::ifstream in(neox::test::source_dir() + "/configs/README.md");
  std::string readme((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(r.output, readme) << "regenerate with: neox config --reference > configs/README.md";
}

TEST(Cli, UnknownCommandAndBadOptionsFailCleanly) {
  Result r = run("frobnicate");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("unknown command 'frobnicate'"), std::string::npos);
  Result bad = run("score --no-such-option");
  EXPECT_EQ(bad.status, 1) << bad.output;
  EXPECT_NE(bad.output.find("no-such-option"), std::string::npos) << bad.output;
}

}  // namespace
