// SPDX-License-Identifier: Apache-2.0
// The `mpi` comm plugin, under mpirun: every collective on 2 and 4 ranks
// (tests/mpi_collectives_check.cpp), and data parallelism end to end: N
// ranks of `neox train` with micro-batch B give the losses and the final
// weights of one process with micro-batch B*N.
//
// Skipped (with the reason) when the plugin or the check program was not
// built (no MPI at configure time) or mpirun is not on PATH. The jobs run
// with what containers and CI need: --oversubscribe (more ranks than cores),
// --allow-run-as-root, the shared-memory transport without its single-copy
// mechanism (btl self,vader; vader_single_copy_mechanism none: CMA is often
// forbidden in containers), one OpenMP thread per rank, and a timeout.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "neox/config.h"
#include "neox/safetensors.h"
#include "neox/trainer.h"
#include "test_support.h"

namespace fs = std::filesystem;
using neox::test::read_text;
using neox::test::run_command;

namespace {

#ifdef NEOX_MPI_CHECK_BINARY
const std::string kCheckBinary = neox::test::env_or("NEOX_TEST_MPI_CHECK_BINARY", NEOX_MPI_CHECK_BINARY);
#else
const std::string kCheckBinary = neox::test::env_or("NEOX_TEST_MPI_CHECK_BINARY", "");
#endif

std::string mpi_plugin() { return neox::test::build_plugin_dir() + "/neox_comm_mpi.so"; }

// Why MPI tests cannot run here, or "" when they can.
std::string why_not() {
  if (!fs::exists(mpi_plugin()))
    return "the mpi comm plugin was not built (" + mpi_plugin() +
           " is missing; install libopenmpi-dev openmpi-bin and reconfigure)";
  if (kCheckBinary.empty() || !fs::exists(kCheckBinary))
    return "tests/mpi_collectives_check was not built (no MPI at configure time)";
  if (run_command("command -v mpirun").status != 0) return "mpirun is not on PATH (apt-get install openmpi-bin)";
  return "";
}

#define SKIP_WITHOUT_MPI()                                  \
  do {                                                      \
    const std::string why = why_not();                      \
    if (!why.empty()) GTEST_SKIP() << "no MPI: " << why;    \
  } while (0)

// The mpirun prefix for `np` ranks (see the file comment).
std::string mpirun(int np) {
  return "OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_rmaps_base_oversubscribe=1 timeout 120 mpirun "
         "--oversubscribe --allow-run-as-root --mca btl self,vader -x OMP_NUM_THREADS=1 -x NEOX_PLUGIN_PATH -np " +
         std::to_string(np) + " ";
}

int count(const std::string& text, const std::string& what) {
  int n = 0;
  for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

std::string temp_dir(const std::string& name) { return neox::test::temp_dir("neox_mpi", name); }

class MpiCollectives : public ::testing::TestWithParam<int> {};

TEST_P(MpiCollectives, EveryMethodGivesTheRightNumbersOnEveryRank) {
  SKIP_WITHOUT_MPI();
  const int np = GetParam();
  auto r = run_command(mpirun(np) + kCheckBinary + " " + neox::test::build_plugin_dir());
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(count(r.output, "OK"), np) << r.output;
  for (int rank = 0; rank < np; ++rank)
    EXPECT_NE(r.output.find("rank " + std::to_string(rank) + " of " + std::to_string(np) + ": OK"), std::string::npos)
        << r.output;
}

INSTANTIATE_TEST_SUITE_P(Ranks, MpiCollectives, ::testing::Values(2, 4),
                         [](const auto& info) { return "np" + std::to_string(info.param); });

// The small model of test_trainer.cpp on GPT-NeoX's test corpus; one
// metrics line per step, an evaluation at step 5 and the test split at the end.
std::string dp_config(const std::string& dir, const std::string& comm, int micro_batch) {
  return R"([plugins]
comm = ")" + comm + R"("
data = "mmap"
[plugins.options.mmap]
data_path = ")" + neox::test::testdata_dir() + R"(/megatron/corpus_a"
split = "80,15,5"
[model]
num_layers = 2
hidden_size = 32
num_attention_heads = 2
vocab_size = 1000
seq_length = 16
max_position_embeddings = 16
rotary_pct = 0.5
gpt_j_residual = true
[optimizer]
lr = 1e-3
warmup = 0.2
lr_decay_style = "cosine"
lr_decay_iters = 10
gradient_clipping = 1.0
weight_decay = 0.01
[training]
train_micro_batch_size_per_gpu = )" + std::to_string(micro_batch) + R"(
train_iters = 10
eval_interval = 5
eval_iters = 1
log_interval = 1
checkpoint_factor = 100
log_dir = ")" + dir + R"(/runs"
run_name = "r"
save = ")" + dir + R"(/ckpt"
)";
}

struct RunOutputs {
  std::vector<double> losses;       // per step
  std::vector<double> eval_losses;  // valid at 5, 10; test at the end
};

RunOutputs read_metrics(const std::string& path) {
  RunOutputs out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    (j.contains("split") ? out.eval_losses : out.losses).push_back(j.at("loss").get<double>());
  }
  return out;
}

class MpiDataParallel : public ::testing::TestWithParam<int> {};

// N ranks x micro-batch 4/N against one process with micro-batch 4: the
// same sequences per step (the data plugins give rank r the r-th share of
// each global batch), so the same losses and weights up to rounding.
TEST_P(MpiDataParallel, NRanksEqualOneProcessWithTheGlobalBatch) {
  SKIP_WITHOUT_MPI();
  const int np = GetParam();
  const std::string dir = temp_dir("dp" + std::to_string(np));
  fs::create_directories(dir + "/one");
  fs::create_directories(dir + "/many");

  neox::TrainResult one = neox::train(neox::parse_config(dp_config(dir + "/one", "local", 4), "one.toml"));
  ASSERT_EQ(one.train_losses.size(), 10u);

  const std::string cfg = dir + "/many/c.toml";
  std::ofstream(cfg) << dp_config(dir + "/many", "mpi", 4 / np);
  auto r = run_command(mpirun(np) + neox::test::neox_binary() + " train " + cfg);
  ASSERT_EQ(r.status, 0) << r.output;
  // Rank 0 alone prints the info lines; the others stay quiet.
  EXPECT_NE(r.output.find("comm mpi (" + std::to_string(np) + " ranks)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("x " + std::to_string(np) + " ranks = 4 sequences"), std::string::npos) << r.output;
  EXPECT_EQ(count(r.output, "step 10/10"), 1) << "only rank 0 logs steps:\n" << r.output;
  EXPECT_EQ(count(r.output, "[rank 1]"), 0) << "ranks other than 0 log only warnings and errors:\n" << r.output;

  const RunOutputs one_m = read_metrics(one.run_dir + "/metrics.jsonl");
  const RunOutputs many_m = read_metrics(dir + "/many/runs/r/metrics.jsonl");
  ASSERT_EQ(one_m.losses.size(), 10u);
  ASSERT_EQ(many_m.losses.size(), one_m.losses.size());
  for (std::size_t i = 0; i < one_m.losses.size(); ++i) {
    EXPECT_NEAR(one_m.losses[i], one.train_losses[i], 1e-12 * one.train_losses[i]);
    EXPECT_NEAR(many_m.losses[i], one_m.losses[i], 1e-5 * one_m.losses[i]) << "step " << i + 1;
  }
  ASSERT_EQ(many_m.eval_losses.size(), one_m.eval_losses.size());
  for (std::size_t i = 0; i < one_m.eval_losses.size(); ++i)
    EXPECT_NEAR(many_m.eval_losses[i], one_m.eval_losses[i], 1e-5 * one_m.eval_losses[i]) << "evaluation " << i;

  // The final weights: relative error over all parameters, and the largest
  // difference of any one weight. (Not a relative error per tensor: the key
  // biases get gradients that are zero up to rounding, which Adam turns into
  // steps of lr size in random directions, so their tensor differs by ~2e-4
  // relative between any two summation orders; one process with gradient
  // accumulation differs from one process with the larger micro-batch just
  // as much. Those weights stay within 3e-6 of each other.)
  auto a = neox::SafeTensorsFile::open(dir + "/one/ckpt/global_step10/model.safetensors");
  auto b = neox::SafeTensorsFile::open(dir + "/many/ckpt/global_step10/model.safetensors");
  ASSERT_EQ(a.tensors().size(), b.tensors().size());
  double num = 0, den = 0;
  for (const auto& info : a.tensors()) {
    neox::Tensor x = a.read(info.name, neox::DType::f64), y = b.read(info.name, neox::DType::f64);
    ASSERT_EQ(x.numel(), y.numel()) << info.name;
    double max_diff = 0;
    for (std::int64_t i = 0; i < x.numel(); ++i) {
      const double d = y.ptr<double>()[i] - x.ptr<double>()[i];
      num += d * d;
      den += x.ptr<double>()[i] * x.ptr<double>()[i];
      max_diff = std::max(max_diff, std::abs(d));
    }
    EXPECT_LE(max_diff, 1e-5) << info.name;
  }
  ASSERT_GT(den, 0.0);
  EXPECT_LE(std::sqrt(num / den), 1e-5) << "relative error over all parameters";
  fs::remove_all(dir);
}

// Ranks that were given different settings refuse to start, every one of
// them, naming the ranks (MPMD: one mpirun, two command lines).
TEST(MpiDataParallel, RanksWithDifferentConfigsRefuseToStart) {
  SKIP_WITHOUT_MPI();
  const std::string dir = temp_dir("differ");
  const std::string cfg = dir + "/c.toml";
  std::ofstream(cfg) << dp_config(dir, "mpi", 2);
  const std::string neox = neox::test::neox_binary() + " train " + cfg;
  auto r = run_command(mpirun(1) + neox + " : -np 1 " + neox + " : -np 1 " + neox + " --set training.seed=7");
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("the config differs between ranks: rank 2 and rank 0"), std::string::npos) << r.output;
  EXPECT_EQ(count(r.output, "step 1/"), 0) << "no rank may start training:\n" << r.output;
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Ranks, MpiDataParallel, ::testing::Values(2, 4),
                         [](const auto& info) { return "np" + std::to_string(info.param); });

// A config that asks for the mpi plugin outside mpirun still runs, as a
// job of one rank (MPI singleton).
TEST(MpiComm, SingletonWithoutMpirunIsOneRank) {
  SKIP_WITHOUT_MPI();
  auto r = run_command("OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_ALLOW_RUN_AS_ROOT=1 "
                       "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout 60 " +
                       kCheckBinary + " " + neox::test::build_plugin_dir());
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("rank 0 of 1: OK"), std::string::npos) << r.output;
}

}  // namespace
