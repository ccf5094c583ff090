// SPDX-License-Identifier: Apache-2.0
// Communicator::stats() of the `local` comm plugin (one rank: every call
// counted, 0 bytes sent by the ring formulas), the formulas of
// neox/communicator.h themselves, and `neox bench comm` on one process.
// The `mpi` plugin's counts on 1, 2, 3 and 4 ranks are checked by
// tests/support/mpi_collectives_check.cpp (test_comm_mpi.cpp).
#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "neox/communicator.h"
#include "neox/error.h"
#include "neox/options.h"
#include "neox/registry.h"
#include "test_support.h"

namespace {

using neox::DType;
using neox::ReduceOp;
using neox::Tensor;

TEST(CommStats, RingFormulasInExactIntegers) {
  // 2(N-1)/N n and (N-1)/N n, rounded down, for n = 4096 and 1000 bytes.
  EXPECT_EQ(neox::ring_all_reduce_bytes(4096, 1), 0);
  EXPECT_EQ(neox::ring_all_reduce_bytes(4096, 2), 4096);
  EXPECT_EQ(neox::ring_all_reduce_bytes(4096, 4), 6144);
  EXPECT_EQ(neox::ring_all_reduce_bytes(1000, 3), 1333);
  EXPECT_EQ(neox::ring_gather_bytes(4096, 1), 0);
  EXPECT_EQ(neox::ring_gather_bytes(4096, 2), 2048);
  EXPECT_EQ(neox::ring_gather_bytes(4096, 4), 3072);
  EXPECT_EQ(neox::ring_gather_bytes(1000, 3), 666);
}

TEST(CommStats, LocalCountsEveryCallWithZeroBytes) {
  neox::PluginRegistry registry;
  auto comm = registry.make_comm("local", neox::Options("plugins.options.local"));
  EXPECT_TRUE(comm->stats().ops.empty());
  Tensor t = Tensor::zeros_host({1024}, DType::f32);
  Tensor out = Tensor::zeros_host({1024}, DType::f32);
  for (int i = 0; i < 3; ++i) comm->all_reduce(t, ReduceOp::sum);
  comm->reduce_scatter(t, out, ReduceOp::avg);
  comm->all_gather(t, out);
  comm->broadcast(t, 0);
  comm->barrier();
  comm->barrier();
  // Calls refused on their arguments are not counted.
  EXPECT_THROW(comm->broadcast(t, 1), neox::Error);
  EXPECT_THROW(comm->send(t, 1, 0), neox::Error);
  const neox::CommStats& st = comm->stats();
  const std::map<std::string, std::int64_t> calls = {
      {"all_reduce", 3}, {"reduce_scatter", 1}, {"all_gather", 1}, {"broadcast", 1}, {"barrier", 2}};
  ASSERT_EQ(st.ops.size(), calls.size());
  for (const auto& [op, n] : calls) {
    ASSERT_EQ(st.ops.count(op), 1u) << op;
    EXPECT_EQ(st.ops.at(op).calls, n) << op;
    EXPECT_EQ(st.ops.at(op).bytes, 0) << op;
    EXPECT_GE(st.ops.at(op).seconds, 0.0) << op;
  }
  EXPECT_EQ(st.total_bytes(), 0);
  comm->reset_stats();
  EXPECT_TRUE(comm->stats().ops.empty());
}

// One process: a table with every op, 0 bytes counted and by the formula,
// and the same figures in --json.
TEST(CommStats, BenchCommOnOneProcess) {
  const std::string dir = neox::test::temp_dir("neox_comm_stats", "bench");
  auto r = neox::test::run_neox("bench comm --comm local --sizes 4K,1M --runs 2 --json " + dir + "/comm.json");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("comm local, 1 ranks"), std::string::npos) << r.output;
  const auto j = nlohmann::json::parse(neox::test::read_text(dir + "/comm.json"));
  EXPECT_EQ(j.at("ranks").get<int>(), 1);
  ASSERT_EQ(j.at("results").size(), 8u) << j.dump();
  for (const auto& row : j.at("results")) {
    EXPECT_EQ(row.at("counted_bytes_per_call").get<std::int64_t>(), 0) << row.dump();
    EXPECT_EQ(row.at("formula_bytes_per_call").get<std::int64_t>(), 0) << row.dump();
    EXPECT_TRUE(row.at("all_ranks_match").get<bool>()) << row.dump();
    EXPECT_GE(row.at("time_s").get<double>(), 0.0) << row.dump();
  }
  EXPECT_EQ(j.at("results")[1].at("bytes").get<std::int64_t>(), 1 << 20);
  auto bad = neox::test::run_neox("bench comm --comm local --sizes 4X");
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.output.find("--sizes: '4X' is not a size"), std::string::npos) << bad.output;
}

}  // namespace
