// SPDX-License-Identifier: Apache-2.0
// OpProfiler (neox/train/op_profiler.h) on the cpu backend, and the table of
// `neox bench train --profile`.
#include <gtest/gtest.h>

#include <string>

#include "neox/registry.h"
#include "neox/tensor.h"
#include "neox/train/op_profiler.h"
#include "test_support.h"

namespace {

std::shared_ptr<neox::Backend> cpu_backend() {
  static neox::PluginRegistry registry{{neox::test::build_plugin_dir()}};
  return registry.make_backend("cpu", {}, {});
}

TEST(OpProfiler, CountsCallsShapesBytesAndFlopsThenRestoresTheTable) {
  auto be = cpu_backend();
  neox::Tensor a = neox::Tensor::empty(be.get(), {6, 4}, neox::DType::f32);
  neox::Tensor b = neox::Tensor::empty(be.get(), {4, 5}, neox::DType::f32);
  neox::Tensor bt = neox::Tensor::empty(be.get(), {6, 5}, neox::DType::f32);
  neox::Tensor c = neox::Tensor::empty(be.get(), {6, 5}, neox::DType::f32);
  neox::Tensor g = neox::Tensor::empty(be.get(), {4, 5}, neox::DType::f32);
  be->kernels.fill(a, 1.0f);
  be->kernels.fill(b, 2.0f);
  be->kernels.fill(bt, 1.0f);
  const std::string before = be->kernels.matmul.target_type().name();
  {
    neox::OpProfiler profiler(*be);
    EXPECT_NE(std::string(be->kernels.matmul.target_type().name()), before) << "the op is wrapped";
    be->kernels.matmul(c, a, b, false, false, 1.0f, 0.0f);
    be->kernels.matmul(c, a, b, false, false, 1.0f, 1.0f);
    be->kernels.matmul(g, a, bt, true, false, 1.0f, 0.0f);  // a^T [4,6] x bt [6,5]: K = 6
    EXPECT_DOUBLE_EQ(be->kernels.sum(c), 6 * 5 * 16.0);     // returns through the wrapper
    const auto entries = profiler.entries();
    ASSERT_EQ(entries.size(), 3u);
    const neox::OpProfiler::Entry* ab = nullptr;
    const neox::OpProfiler::Entry* atb = nullptr;
    for (const auto& e : entries) {
      if (e.op == "matmul" && e.shapes == "f32[6,5] f32[6,4] f32[4,5]") ab = &e;
      if (e.op == "matmul" && e.shapes == "f32[4,5] f32[6,4] f32[6,5]") atb = &e;
      EXPECT_GE(e.seconds, 0.0);
    }
    ASSERT_NE(ab, nullptr);
    ASSERT_NE(atb, nullptr);
    EXPECT_EQ(ab->calls, 2);
    EXPECT_DOUBLE_EQ(ab->flops, 2.0 * 6 * 5 * 4);
    EXPECT_DOUBLE_EQ(ab->bytes, 4.0 * (30 + 24 + 20));
    EXPECT_EQ(atb->calls, 1);
    EXPECT_DOUBLE_EQ(atb->flops, 2.0 * 4 * 5 * 6);
    EXPECT_GE(profiler.total_seconds(), ab->seconds);
  }
  // The table is the backend's own again: calls are no longer recorded and
  // still compute.
  EXPECT_EQ(std::string(be->kernels.matmul.target_type().name()), before);
  be->kernels.matmul(c, a, b, false, false, 1.0f, 0.0f);
  EXPECT_DOUBLE_EQ(be->kernels.sum(c), 6 * 5 * 8.0);
}

TEST(OpProfiler, BenchTrainPrintsTheTable) {
  const std::string src = neox::test::source_dir();
  auto r = neox::test::run_neox(
      "bench train --config " + src +
      "/configs/tiny-cpu.toml --steps 1 --warmup 1 --profile --mem-gbs 10 --gemm-tflops 0.1 --profile-rows 5");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("profile:     one step with every op synchronised"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("attention_forward"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("by op:"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("more rows"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("floor sum:"), std::string::npos) << r.output;
}

// A config with a ZeRO stage (as the pythia zoo configs have) benchmarks
// the one-process step with adamw, as `neox train` on one rank trains it,
// instead of refusing the zero plugin's options.
TEST(OpProfiler, BenchTrainTakesAZeroConfig) {
  const std::string src = neox::test::source_dir();
  for (const char* chosen : {"adamw", "zero"}) {
    auto r = neox::test::run_neox("bench train --config " + src +
                                  "/configs/tiny-cpu.toml --steps 1 --warmup 0 --set training.zero_stage=2 "
                                  "--set plugins.optimizer=" +
                                  chosen);
    ASSERT_EQ(r.status, 0) << chosen << ": " << r.output;
    EXPECT_NE(r.output.find("optimizer:   adamw (training.zero_stage 2: one process has nothing to partition)"),
              std::string::npos)
        << r.output;
    EXPECT_NE(r.output.find("tokens/s"), std::string::npos) << r.output;
  }
}

}  // namespace
