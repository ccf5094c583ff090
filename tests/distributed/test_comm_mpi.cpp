// SPDX-License-Identifier: Apache-2.0
// The `mpi` comm plugin, under mpirun: every collective and the bytes it
// counts on 1 to 4 ranks (tests/support/mpi_collectives_check.cpp); data
// parallelism end to end: N ranks of `neox train` with micro-batch B give
// the losses and the final weights of one process with micro-batch B*N;
// faults (tests/support/mpi_fault_check.cpp): a rank that hangs, stops or dies makes
// the job end within the timeout with an error naming it; the timeout_s
// option; `neox bench comm` on 2 ranks.
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
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "neox/communicator.h"
#include "neox/io/safetensors.h"
#include "neox/options.h"
#include "neox/registry.h"
#include "neox/train/config.h"
#include "neox/train/trainer.h"
#include "test_support.h"

namespace fs = std::filesystem;
using neox::test::read_text;
using neox::test::run_command;
using neox::test::run_mpirun;

namespace {

#ifdef NEOX_MPI_CHECK_BINARY
const std::string kCheckBinary = neox::test::env_or("NEOX_TEST_MPI_CHECK_BINARY", NEOX_MPI_CHECK_BINARY);
#else
const std::string kCheckBinary = neox::test::env_or("NEOX_TEST_MPI_CHECK_BINARY", "");
#endif
#ifdef NEOX_MPI_FAULT_BINARY
const std::string kFaultBinary = neox::test::env_or("NEOX_TEST_MPI_FAULT_BINARY", NEOX_MPI_FAULT_BINARY);
#else
const std::string kFaultBinary = neox::test::env_or("NEOX_TEST_MPI_FAULT_BINARY", "");
#endif

// Why MPI tests cannot run here, or "" when they can.
std::string why_not() {
  if (std::string why = neox::test::why_no_mpirun(); !why.empty()) return why;
  if (kCheckBinary.empty() || !fs::exists(kCheckBinary))
    return "tests/mpi_collectives_check was not built (no MPI at configure time)";
  return "";
}

#define SKIP_WITHOUT_MPI()                               \
  do {                                                   \
    const std::string why = why_not();                   \
    if (!why.empty()) GTEST_SKIP() << "no MPI: " << why; \
  } while (0)

// The mpirun prefix for `np` ranks (see the file comment).
std::string mpirun(int np) { return neox::test::mpirun_prefix(np); }

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
  auto r = run_mpirun(mpirun(np) + kCheckBinary + " " + neox::test::build_plugin_dir());
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(count(r.output, "OK"), np) << r.output;
  for (int rank = 0; rank < np; ++rank)
    EXPECT_NE(r.output.find("rank " + std::to_string(rank) + " of " + std::to_string(np) + ": OK"), std::string::npos)
        << r.output;
}

// 3: a ring whose parts are not all the same length.
INSTANTIATE_TEST_SUITE_P(Ranks, MpiCollectives, ::testing::Values(2, 3, 4),
                         [](const auto& info) { return "np" + std::to_string(info.param); });

// The small model of test_trainer.cpp on GPT-NeoX's test corpus; one
// metrics line per step, an evaluation at step 5 and the test split at the end.
std::string dp_config(const std::string& dir, const std::string& comm, int micro_batch,
                      const std::string& more_training = "") {
  return R"([plugins]
comm = ")" +
         comm + R"("
data = "mmap"
[plugins.options.mmap]
data_path = ")" +
         neox::test::testdata_dir() + R"(/megatron/corpus_a"
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
train_micro_batch_size_per_gpu = )" +
         std::to_string(micro_batch) + R"(
train_iters = 10
eval_interval = 5
eval_iters = 1
log_interval = 1
checkpoint_factor = 100
log_dir = ")" +
         dir + R"(/runs"
run_name = "r"
save = ")" +
         dir + R"(/ckpt"
)" + more_training;
}

// (ranks, training.zero_overlap_comm)
class MpiDataParallel : public ::testing::TestWithParam<std::tuple<int, bool>> {};

// N ranks x micro-batch 4/N against one process with micro-batch 4: the
// same sequences per step (the data plugins give rank r the r-th share of
// each global batch), so the same losses and weights up to rounding.
TEST_P(MpiDataParallel, NRanksEqualOneProcessWithTheGlobalBatch) {
  SKIP_WITHOUT_MPI();
  const auto [np, overlap] = GetParam();
  const std::string dir = temp_dir("dp" + std::to_string(np) + (overlap ? "_overlap" : ""));
  fs::create_directories(dir + "/one");
  fs::create_directories(dir + "/many");

  // With overlap the gradients are averaged during the last micro-batch's
  // backward: on 2 ranks with two micro-batches per step, so that the first
  // backward must not reduce (and the reference accumulates too, so that
  // evaluation sees the same micro-batch of 2 sequences).
  const int accum = overlap && np == 2 ? 2 : 1;
  const std::string accumulate = "gradient_accumulation_steps = " + std::to_string(accum) + "\n";
  neox::TrainResult one =
      neox::train(neox::parse_config(dp_config(dir + "/one", "local", 4 / accum, accumulate), "one.toml"));
  ASSERT_EQ(one.train_losses.size(), 10u);

  const std::string cfg = dir + "/many/c.toml";
  std::ofstream(cfg) << dp_config(dir + "/many", "mpi", 4 / np / accum,
                                  accumulate + (overlap ? "zero_overlap_comm = true\n" : ""));
  auto r = run_mpirun(mpirun(np) + neox::test::neox_binary() + " train " + cfg);
  ASSERT_EQ(r.status, 0) << r.output;
  // Rank 0 alone prints the info lines; the others stay quiet.
  EXPECT_NE(r.output.find("comm mpi (" + std::to_string(np) + " ranks)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("x " + std::to_string(np) + " ranks = 4 sequences"), std::string::npos) << r.output;
  EXPECT_EQ(count(r.output, "step 10/10"), 1) << "only rank 0 logs steps:\n" << r.output;
  EXPECT_EQ(count(r.output, "[rank 1]"), 0) << "ranks other than 0 log only warnings and errors:\n" << r.output;
  if (overlap) {
    EXPECT_NE(r.output.find("averaged during backward"), std::string::npos) << r.output;
  }

  const neox::test::RunLosses one_m = neox::test::read_losses(one.run_dir + "/metrics.jsonl");
  const neox::test::RunLosses many_m = neox::test::read_losses(dir + "/many/runs/r/metrics.jsonl");
  ASSERT_EQ(one_m.train.size(), 10u);
  ASSERT_EQ(many_m.train.size(), one_m.train.size());
  for (std::size_t i = 0; i < one_m.train.size(); ++i) {
    EXPECT_NEAR(one_m.train[i], one.train_losses[i], 1e-12 * one.train_losses[i]);
    EXPECT_NEAR(many_m.train[i], one_m.train[i], 1e-5 * one_m.train[i]) << "step " << i + 1;
  }
  ASSERT_EQ(many_m.eval.size(), one_m.eval.size());
  for (std::size_t i = 0; i < one_m.eval.size(); ++i)
    EXPECT_NEAR(many_m.eval[i], one_m.eval[i], 1e-5 * one_m.eval[i]) << "evaluation " << i;

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
  auto r = run_mpirun(mpirun(1) + neox + " : -np 1 " + neox + " : -np 1 " + neox + " --set training.seed=7");
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("the config differs between ranks: rank 2 and rank 0"), std::string::npos) << r.output;
  EXPECT_EQ(count(r.output, "step 1/"), 0) << "no rank may start training:\n" << r.output;
  fs::remove_all(dir);
}

// comm = "local" under mpirun would train N unrelated copies: refused.
TEST(MpiDataParallel, LocalCommUnderMpirunIsRefused) {
  SKIP_WITHOUT_MPI();
  const std::string dir = temp_dir("local_under_mpirun");
  const std::string cfg = dir + "/c.toml";
  std::ofstream(cfg) << dp_config(dir, "local", 2);
  auto r = run_mpirun(mpirun(2) + neox::test::neox_binary() + " train " + cfg);
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("the local communicator runs one process alone: set plugins.comm to \"mpi\""),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("rank 1 of 2"), std::string::npos) << r.output;
  EXPECT_EQ(count(r.output, "step 1/"), 0) << r.output;
  fs::remove_all(dir);
}

// The mirror image: comm = "mpi" started without an MPI launcher, with
// RANK and WORLD_SIZE set by hand (as for torchrun), would make every
// process an MPI job of its own that trains alone: refused, naming both
// views of the job and what to do.
TEST(MpiDataParallel, MpiCommWithoutAnMpiLauncherIsRefused) {
  SKIP_WITHOUT_MPI();
  const std::string dir = temp_dir("mpi_without_launcher");
  const std::string cfg = dir + "/c.toml";
  std::ofstream(cfg) << dp_config(dir, "mpi", 2);
  auto r = run_command(
      "env -u OMPI_COMM_WORLD_RANK -u OMPI_COMM_WORLD_SIZE -u PMIX_RANK -u PMI_RANK "
      "-u SLURM_STEP_ID -u SLURM_STEPID RANK=1 WORLD_SIZE=2 LOCAL_RANK=1 timeout 60 " +
      neox::test::neox_binary() + " train " + cfg);
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("comm 'mpi': this process is rank 1 of 2 (local 1 of 2) from environment (RANK, "
                          "WORLD_SIZE), but MPI_Init found rank 0 of 1 (a process of its own"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("start the job with mpirun or srun --mpi=pmix"), std::string::npos) << r.output;
  EXPECT_EQ(count(r.output, "step 1/"), 0) << r.output;
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Ranks, MpiDataParallel,
                         ::testing::Values(std::make_tuple(2, false), std::make_tuple(4, false),
                                           std::make_tuple(2, true), std::make_tuple(4, true)),
                         [](const auto& info) {
                           return "np" + std::to_string(std::get<0>(info.param)) +
                                  (std::get<1>(info.param) ? "_overlap" : "");
                         });

// ---------------------------------------------------------------- faults

struct Timed {
  neox::test::CommandResult result;
  double seconds = 0;
};

// mpi_fault_check on `np` ranks (with `mpirun_flags`): rank `faulty` goes
// wrong (`mode`) before collective #3, under timeout_s = `timeout_s`.
Timed run_fault(int np, const std::string& mode, int faulty, double timeout_s, const std::string& mpirun_flags = "") {
  const auto t0 = std::chrono::steady_clock::now();
  Timed t;
  t.result = run_mpirun(mpirun(np) + mpirun_flags + " " + kFaultBinary + " " + neox::test::build_plugin_dir() + " " +
                        mode + " " + std::to_string(faulty) + " " + std::to_string(timeout_s));
  t.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return t;
}

#define SKIP_WITHOUT_FAULT_CHECK()                                                      \
  do {                                                                                  \
    SKIP_WITHOUT_MPI();                                                                 \
    if (kFaultBinary.empty() || !std::filesystem::exists(kFaultBinary))                 \
      GTEST_SKIP() << "tests/mpi_fault_check was not built (no MPI at configure time)"; \
  } while (0)

// The waiting ranks give up after timeout_s plus the grace period in which
// they ask the others where they are (2 s); the job startup and MPI_Abort
// take a few seconds more on a loaded machine.
constexpr double kTimeout = 3.0;
constexpr double kLatest = kTimeout + 2.0 + 12.0;

// A rank that sleeps (or is stopped) before all_reduce #3: every other rank
// ends with an error naming the operation, its number, itself and rank 1,
// and the job ends (MPI_Abort) although rank 1 never comes back.
class MpiFaults : public ::testing::TestWithParam<std::string> {};

TEST_P(MpiFaults, AHungRankIsNamedAndTheJobEnds) {
  SKIP_WITHOUT_FAULT_CHECK();
  const Timed t = run_fault(2, GetParam(), 1, kTimeout);
  EXPECT_NE(t.result.status, 0) << t.result.output;
  EXPECT_GE(t.seconds, kTimeout) << t.result.output;
  EXPECT_LE(t.seconds, kLatest) << t.result.output;
  EXPECT_NE(t.result.output.find("rank 1: " + GetParam() + " before step 3"), std::string::npos) << t.result.output;
  EXPECT_NE(t.result.output.find("comm 'mpi' (rank 0 of 2): all_reduce #3 (4096 bytes) timed out after 3 s "
                                 "(<command line>: plugins.options.mpi.timeout_s)"),
            std::string::npos)
      << t.result.output;
  EXPECT_NE(t.result.output.find("Did not arrive: rank 1 not responding (dead, stopped, or busy outside the "
                                 "communicator)."),
            std::string::npos)
      << t.result.output;
  // Only MPI_Abort ends rank 1 before its 10 minutes (mpirun's "MPI_ABORT
  // was invoked" notice is not always printed: Open MPI 4.1 sometimes fails
  // to relay it).
  EXPECT_EQ(count(t.result.output, ": done"), 0) << t.result.output;
}

INSTANTIATE_TEST_SUITE_P(Modes, MpiFaults, ::testing::Values("hang", "stop"),
                         [](const auto& info) { return info.param; });

// 4 ranks: rank 1 sleeps; rank 3 waits for a message from it instead of
// entering all_reduce #3 with ranks 0 and 2. Ranks 0 and 2 name rank 1 as
// not responding and rank 3 as behind, with where it is; rank 3 names
// rank 1 and where the others are.
TEST(MpiFaultsReport, RanksThatAnswerFromEarlierAreBehind) {
  SKIP_WITHOUT_FAULT_CHECK();
  const Timed t = run_fault(4, "behind", 1, kTimeout);
  const std::string& out = t.result.output;
  EXPECT_NE(t.result.status, 0) << out;
  EXPECT_LE(t.seconds, kLatest) << out;
  const std::string missing =
      "Did not arrive: rank 1 not responding (dead, stopped, or busy outside the communicator); "
      "rank 3 behind, in recv #1 from rank 1 (tag 7), after collective #2.";
  // The first rank to abort ends the job: at least one of ranks 0 and 2 reports.
  const bool zero = out.find("(rank 0 of 4): all_reduce #3 (4096 bytes) timed out") != std::string::npos;
  const bool two = out.find("(rank 2 of 4): all_reduce #3 (4096 bytes) timed out") != std::string::npos;
  EXPECT_TRUE(zero || two) << out;
  EXPECT_NE(out.find(missing), std::string::npos) << out;
  if (zero) {
    EXPECT_NE(out.find(missing + " In all_reduce #3 like this rank: rank 2."), std::string::npos) << out;
  }
  if (two) {
    EXPECT_NE(out.find(missing + " In all_reduce #3 like this rank: rank 0."), std::string::npos) << out;
  }
  if (out.find("(rank 3 of 4): recv #1 from rank 1 (tag 7, 16 bytes) timed out") != std::string::npos) {
    EXPECT_NE(out.find("Did not arrive: rank 1 not responding (dead, stopped, or busy outside the communicator). "
                       "Elsewhere: rank 0 in all_reduce #3; rank 2 in all_reduce #3."),
              std::string::npos)
        << out;
  }
}

// A rank killed by SIGKILL: Open MPI 4.1's mpirun notices at once and ends
// the job naming the rank, long before timeout_s (60 s here).
TEST(MpiFaultsReport, AKilledRankEndsTheJobThroughMpirun) {
  SKIP_WITHOUT_FAULT_CHECK();
  const Timed t = run_fault(2, "kill", 1, 60.0);
  EXPECT_NE(t.result.status, 0) << t.result.output;
  EXPECT_LE(t.seconds, 20.0) << t.result.output;
  EXPECT_NE(t.result.output.find("mpirun noticed that process rank 1 with PID"), std::string::npos) << t.result.output;
  EXPECT_NE(t.result.output.find("exited on signal 9 (Killed)"), std::string::npos) << t.result.output;
}

// A rank that fails with an error of its own (neox's main then calls
// job_failed_alone()) ends the job when it exits, long before the others'
// timeout_s (60 s here): without that it would wait in MPI_Finalize for
// them while they waited for it in all_reduce #3.
TEST(MpiFaultsReport, ARankWithAnErrorOfItsOwnEndsTheJob) {
  SKIP_WITHOUT_FAULT_CHECK();
  const Timed t = run_fault(3, "throw", 1, 60.0);
  EXPECT_NE(t.result.status, 0) << t.result.output;
  EXPECT_LE(t.seconds, 20.0) << t.result.output;
  EXPECT_NE(t.result.output.find("mpi_fault_check: rank 1: error: an error of this rank alone, thrown on purpose"),
            std::string::npos)
      << t.result.output;
  EXPECT_EQ(t.result.output.find("timed out"), std::string::npos) << t.result.output;
  EXPECT_EQ(count(t.result.output, ": done"), 0) << t.result.output;
}

// The same under `mpirun --enable-recovery`, which lets the job go on
// without the dead rank: the others' timeout names it.
TEST(MpiFaultsReport, AKilledRankIsNamedWhenMpirunLetsTheJobGoOn) {
  SKIP_WITHOUT_FAULT_CHECK();
  const Timed t = run_fault(3, "kill", 1, kTimeout, "--enable-recovery");
  EXPECT_LE(t.seconds, kLatest) << t.result.output;
  EXPECT_NE(t.result.output.find("all_reduce #3 (4096 bytes) timed out after 3 s"), std::string::npos)
      << t.result.output;
  EXPECT_NE(t.result.output.find("Did not arrive: rank 1 not responding"), std::string::npos) << t.result.output;
  EXPECT_EQ(count(t.result.output, ": done"), 0) << t.result.output;
}

// timeout_s must be a number of seconds > 0; the error names the key (and
// where it was set). Checked before MPI starts, so in this process.
TEST(MpiComm, TimeoutOptionIsChecked) {
  SKIP_WITHOUT_MPI();
  neox::PluginRegistry registry({neox::test::build_plugin_dir()});
  auto make = [&](neox::Options::Value v) {
    neox::Options o("plugins.options.mpi");
    o.set("timeout_s", std::move(v), {"c.toml", 4, 1});
    return neox::test::error_of([&] { registry.make_comm("mpi", o); });
  };
  const std::string key = "c.toml:4:1: plugins.options.mpi.timeout_s";
  for (neox::Options::Value v :
       {neox::Options::Value{0.0}, neox::Options::Value{std::int64_t{-5}}, neox::Options::Value{-0.5}}) {
    const std::string e = make(v);
    EXPECT_NE(e.find(key), std::string::npos) << e;
    EXPECT_NE(e.find("is not a timeout: give the seconds (> 0"), std::string::npos) << e;
  }
  const std::string e = make(std::string("ten"));
  EXPECT_NE(e.find(key + ": expected a number, got a string"), std::string::npos) << e;
  neox::Options typo("plugins.options.mpi");
  typo.set("timeout", 5.0);
  const std::string u = neox::test::error_of([&] { registry.make_comm("mpi", typo); });
  EXPECT_NE(u.find("plugins.options.mpi.timeout: unknown option"), std::string::npos) << u;
  // From the command line of neox, printed before the process ends.
  auto r = neox::test::run_neox("bench comm --set plugins.options.mpi.timeout_s=0");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("plugins.options.mpi.timeout_s: 0 is not a timeout"), std::string::npos) << r.output;
}

// ------------------------------------------------------------ bench comm

// Two ranks, 4 KiB: a row per op with the bytes rank 0 counted equal to the
// ring formula (all_reduce 2(N-1)/N x 4096, reduce_scatter and all_gather
// (N-1)/N x 4096, broadcast 4096 from the root), on every rank.
TEST(MpiBenchComm, TableShowsCountedBytesEqualToTheFormula) {
  SKIP_WITHOUT_MPI();
  auto r = run_mpirun(mpirun(2) + neox::test::neox_binary() + " bench comm --sizes 4K --runs 2");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("comm mpi, 2 ranks, 2 timed calls"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("counted B/call"), std::string::npos) << r.output;
  const std::map<std::string, long long> expected = {
      {"all_reduce", 4096}, {"reduce_scatter", 2048}, {"all_gather", 2048}, {"broadcast", 4096}};
  int rows = 0;
  std::istringstream lines(r.output);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream in(line);
    std::string op, size, match;
    double time_us = 0, algbw = 0, busbw = 0;
    long long counted = -1, formula = -1;
    if (!(in >> op >> size >> time_us >> algbw >> busbw >> counted >> formula >> match)) continue;
    if (!expected.count(op)) continue;
    ++rows;
    EXPECT_EQ(size, "4K") << line;
    EXPECT_GT(time_us, 0.0) << line;
    EXPECT_EQ(counted, expected.at(op)) << line;
    EXPECT_EQ(formula, expected.at(op)) << line;
    EXPECT_EQ(match, "yes") << "a rank's count differs from its formula: " << line;
    // busbw = algbw x 2(N-1)/N (all_reduce), (N-1)/N (gathers), 1 (broadcast)
    const double factor = op == "all_reduce" || op == "broadcast" ? 1.0 : 0.5;
    EXPECT_NEAR(busbw, algbw * factor, 2e-3 + 1e-2 * algbw) << line;
  }
  EXPECT_EQ(rows, 4) << r.output;
}

// A config that asks for the mpi plugin outside mpirun still runs, as a
// job of one rank (MPI singleton).
TEST(MpiComm, SingletonWithoutMpirunIsOneRank) {
  SKIP_WITHOUT_MPI();
  auto r = run_command(
      "OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_ALLOW_RUN_AS_ROOT=1 "
      "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout 60 " +
      kCheckBinary + " " + neox::test::build_plugin_dir());
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("rank 0 of 1: OK"), std::string::npos) << r.output;
}

}  // namespace
