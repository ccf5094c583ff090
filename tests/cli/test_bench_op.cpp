// SPDX-License-Identifier: Apache-2.0
// `neox bench op`: the table it prints, its numeric comparison, and its
// errors, run as a user would run it (tiny shapes, few runs).
#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

#include "test_support.h"

namespace {

using neox::test::CommandResult;
using neox::test::run_neox;

struct Row {
  std::string provider, backend, device;
  double median_ms = -1, min_ms = -1, max_ms = -1, rate = -1, rel_err = -1, max_abs = -1;
};

// The rows of the table under its header line (provider backend device median_ms ...).
std::vector<Row> table_rows(const std::string& output) {
  std::vector<Row> rows;
  std::istringstream in(output);
  std::string line;
  bool body = false;
  while (std::getline(in, line)) {
    if (line.rfind("provider ", 0) == 0) {
      body = true;
      continue;
    }
    if (!body || line.empty()) continue;
    std::istringstream f(line);
    Row r;
    if (f >> r.provider >> r.backend >> r.device >> r.median_ms >> r.min_ms >> r.max_ms >> r.rate >> r.rel_err >>
        r.max_abs)
      rows.push_back(r);
  }
  return rows;
}

TEST(BenchOp, ComparesTwoProvidersInATable) {
  CommandResult r = run_neox("bench op gelu_forward --a cpu --b cpu --size 0.01 --runs 3");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("op:        gelu_forward, dtype f32"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("out f32[82, 2048], inp f32[82, 2048]"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("median_ms"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("GB/s"), std::string::npos) << r.output;
  const auto rows = table_rows(r.output);
  ASSERT_EQ(rows.size(), 2u) << r.output;
  for (const auto& row : rows) {
    EXPECT_EQ(row.provider, "cpu");
    EXPECT_EQ(row.backend, "cpu");
    EXPECT_EQ(row.device, "cpu");
    EXPECT_GT(row.median_ms, 0.0);
    EXPECT_LE(row.min_ms, row.median_ms);
    EXPECT_GE(row.max_ms, row.median_ms);
    EXPECT_GT(row.rate, 0.0);
    // the cpu backend in f32 is the reference itself: exactly no difference
    EXPECT_EQ(row.rel_err, 0.0) << r.output;
    EXPECT_EQ(row.max_abs, 0.0) << r.output;
  }
}

TEST(BenchOp, Bf16ShowsTheRoundingAgainstTheF32Reference) {
  CommandResult r = run_neox("bench op matmul --a cpu --b=cpu --dtype bf16 --size 0.001 --runs 2 --warmup 0");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("TFLOP/s"), std::string::npos) << r.output;
  const auto rows = table_rows(r.output);
  ASSERT_EQ(rows.size(), 2u) << r.output;
  for (const auto& row : rows) {
    EXPECT_GT(row.rel_err, 0.0) << r.output;   // c is rounded to bf16
    EXPECT_LT(row.rel_err, 2e-2) << r.output;  // by about 2^-9
  }
}

TEST(BenchOp, AKernelsPluginRunsInABackendOfItsDevice) {
  // test-gelu-tanh (tests/plugins) is the tanh approximation of GeLU: it
  // runs in the cpu backend and differs from the exact erf GeLU.
  CommandResult r = run_neox(
      "bench op gelu_forward --a cpu --b test-gelu-tanh --size 0.01 --runs 2 --warmup 0 "
      "--set 'plugins.search_paths=[\"" +
      neox::test::test_plugin_dir() + "\"]'");
  ASSERT_EQ(r.status, 0) << r.output;
  const auto rows = table_rows(r.output);
  ASSERT_EQ(rows.size(), 2u) << r.output;
  EXPECT_EQ(rows[1].provider, "test-gelu-tanh");
  EXPECT_EQ(rows[1].backend, "cpu");
  EXPECT_EQ(rows[0].rel_err, 0.0);
  EXPECT_GT(rows[1].rel_err, 1e-6) << r.output;
  EXPECT_LT(rows[1].rel_err, 1e-2) << r.output;
}

TEST(BenchOp, UnknownOpOrProviderIsAClearError) {
  CommandResult op = run_neox("bench op frobnicate --a cpu --b cpu");
  EXPECT_EQ(op.status, 1) << op.output;
  EXPECT_NE(op.output.find("unknown op 'frobnicate'"), std::string::npos) << op.output;
  EXPECT_NE(op.output.find("gelu_forward"), std::string::npos) << "the choices are listed: " << op.output;

  CommandResult provider = run_neox("bench op gelu_forward --a cpu --b no-such-provider --size 0.01");
  EXPECT_EQ(provider.status, 1) << provider.output;
  EXPECT_NE(provider.output.find("unknown provider 'no-such-provider'"), std::string::npos) << provider.output;
  EXPECT_NE(provider.output.find("cpu"), std::string::npos) << provider.output;

  CommandResult dtype = run_neox("bench op gelu_forward --a cpu --b cpu --dtype i32");
  EXPECT_EQ(dtype.status, 1) << dtype.output;
  EXPECT_NE(dtype.output.find("--dtype"), std::string::npos) << dtype.output;

  CommandResult missing = run_neox("bench op gelu_forward --a cpu");
  EXPECT_EQ(missing.status, 1) << missing.output;
  EXPECT_NE(missing.output.find("--b"), std::string::npos) << missing.output;
}

}  // namespace
