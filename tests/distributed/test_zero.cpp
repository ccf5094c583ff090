// SPDX-License-Identifier: Apache-2.0
// The `zero` optimizer plugin (AdamW with ZeRO stages 1-3).
//
// One process (comm "local"): every stage steps exactly as `adamw`. Under
// mpirun on 2 and 4 ranks (skipped without MPI, as test_comm_mpi.cpp): each
// stage trains like one process with the same global batch (losses and final
// weights within 1e-5 relative over 20 steps); each rank holds 1/N of the
// optimizer state (and with stage 3 of the parameters), by the plugin's own
// accounting in the run's memory.json; and a checkpoint saved on 4 ranks
// resumes on 2 (and 2 on 4) with the losses of the uninterrupted run; a
// ZeRO-3 save that fails on rank 0 half-way ends the job without a hang
// and leaves the previous checkpoint.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "neox/error.h"
#include "neox/io/safetensors.h"
#include "neox/train/config.h"
#include "neox/train/trainer.h"
#include "test_support.h"

namespace fs = std::filesystem;
using neox::test::run_command;
using neox::test::run_mpirun;

namespace {

// The small model of test_comm_mpi.cpp: 2 layers, hidden 32, padded vocab
// 1024 (tied embeddings off), 91,008 parameters; global batch 4.
std::string zero_config(const std::string& dir, const std::string& comm, int micro_batch, int stage,
                        int train_iters = 20) {
  return R"([plugins]
comm = ")" +
         comm + R"("
optimizer = ")" +
         (stage > 0 ? "zero" : "adamw") + R"("
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
gradient_clipping = 1.0
weight_decay = 0.01
[training]
train_micro_batch_size_per_gpu = )" +
         std::to_string(micro_batch) + R"(
gradient_accumulation_steps = 2
train_iters = )" +
         std::to_string(train_iters) + R"(
eval_interval = 10
eval_iters = 1
log_interval = 1
checkpoint_factor = 10
zero_stage = )" +
         std::to_string(stage) + R"(
zero_reduce_bucket_size = 5000
log_dir = ")" +
         dir + R"(/runs"
run_name = "r"
save = ")" +
         dir + R"(/ckpt"
)";
}

// ||a - b|| / ||a|| over every weight of two model.safetensors.
double weights_error(const std::string& a_path, const std::string& b_path) {
  auto a = neox::SafeTensorsFile::open(a_path);
  auto b = neox::SafeTensorsFile::open(b_path);
  EXPECT_EQ(a.tensors().size(), b.tensors().size());
  double num = 0, den = 0;
  for (const auto& info : a.tensors()) {
    neox::Tensor x = a.read(info.name, neox::DType::f64), y = b.read(info.name, neox::DType::f64);
    EXPECT_EQ(x.numel(), y.numel()) << info.name;
    for (std::int64_t i = 0; i < x.numel() && i < y.numel(); ++i) {
      const double d = x.ptr<double>()[i] - y.ptr<double>()[i];
      num += d * d;
      den += x.ptr<double>()[i] * x.ptr<double>()[i];
    }
  }
  return std::sqrt(num / den);
}

void expect_close(const std::vector<double>& got, const std::vector<double>& want, double rel,
                  std::size_t first_step = 1) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < want.size(); ++i)
    EXPECT_NEAR(got[i], want[i], rel * std::abs(want[i])) << "step " << first_step + i;
}

// The reference: one process, plain adamw, micro-batch 4 x 2 accumulation.
struct Reference {
  neox::TrainResult result;
  std::string dir;
};
const Reference& reference() {
  static const Reference ref = [] {
    const std::string dir = neox::test::temp_dir("zero_ref", "one");
    fs::remove_all(dir);
    neox::TrainResult r = neox::train(neox::parse_config(zero_config(dir, "local", 4, 0), "ref.toml"));
    return Reference{r, dir};
  }();
  return ref;
}

// ---------------------------------------------------------------- one process

class ZeroOneProcess : public ::testing::TestWithParam<int> {};

// With one rank every stage partitions nothing away, so it must step exactly
// as adamw: same losses and weights up to summation order.
TEST_P(ZeroOneProcess, StepsAsAdamW) {
  const int stage = GetParam();
  const Reference& ref = reference();
  const std::string dir = neox::test::temp_dir("zero_one", std::to_string(stage));
  fs::remove_all(dir);
  neox::TrainResult r = neox::train(neox::parse_config(zero_config(dir, "local", 4, stage), "zero.toml"));
  ASSERT_EQ(r.train_losses.size(), 20u);
  expect_close(r.train_losses, ref.result.train_losses, 1e-6);
  EXPECT_LT(
      weights_error(ref.dir + "/ckpt/global_step20/model.safetensors", dir + "/ckpt/global_step20/model.safetensors"),
      1e-6);
  // One shard file per rank and the state kind both optimizers share.
  EXPECT_TRUE(fs::exists(dir + "/ckpt/global_step20/optimizer.rank0.safetensors"));
  EXPECT_FALSE(fs::exists(dir + "/ckpt/global_step20/optimizer.safetensors"));
  auto state = nlohmann::json::parse(neox::test::read_text(dir + "/ckpt/global_step20/state.json"));
  EXPECT_EQ(state.at("optimizer"), "zero");
  EXPECT_EQ(state.at("optimizer_state"), "adamw");
  EXPECT_EQ(state.at("optimizer_shards"), 1);
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Stages, ZeroOneProcess, ::testing::Values(1, 2, 3),
                         [](const auto& info) { return "stage" + std::to_string(info.param); });

// A zero checkpoint resumes under plain adamw and the other way round (the
// same "adamw" state kind), continuing the uninterrupted run's losses.
TEST(ZeroOneProcess, CheckpointsInterchangeWithAdamW) {
  const Reference& ref = reference();
  const std::string dir = neox::test::temp_dir("zero_swap", "x");
  fs::remove_all(dir);
  for (auto [first, second] : {std::pair{3, 0}, std::pair{0, 2}}) {
    fs::remove_all(dir);
    neox::train(neox::parse_config(zero_config(dir, "local", 4, first), "a.toml", {"training.exit_interval=10"}));
    neox::TrainResult r =
        neox::train(neox::parse_config(zero_config(dir, "local", 4, second), "b.toml",
                                       {"training.load=\"" + dir + "/ckpt\"", "training.run_name=\"b\""}));
    ASSERT_EQ(r.train_losses.size(), 10u) << first << " -> " << second;
    expect_close(r.train_losses, {ref.result.train_losses.begin() + 10, ref.result.train_losses.end()}, 1e-6, 11);
  }
  fs::remove_all(dir);
}

TEST(ZeroOneProcess, RefusesBadOptions) {
  const std::string dir = neox::test::temp_dir("zero_bad", "x");
  auto error_of = [&](const std::vector<std::string>& sets) {
    return neox::test::error_of(
        [&] { neox::train(neox::parse_config(zero_config(dir, "local", 4, 1), "z.toml", sets)); });
  };
  EXPECT_NE(error_of({"plugins.options.zero.stage=2"}).find("contradicts training.zero_stage = 1"), std::string::npos);
  EXPECT_NE(error_of({"plugins.options.zero.bucket=2"}).find("bucket"), std::string::npos);
  EXPECT_NE(error_of({"training.zero_reduce_bucket_size=0"}).find("zero_reduce_bucket_size"), std::string::npos);
  fs::remove_all(dir);
}

// A GPT-NeoX config's zero_stage on one rank trains with plain adamw.
TEST(ZeroOneProcess, OneRankWithTheDefaultOptimizerUsesAdamW) {
  const std::string dir = neox::test::temp_dir("zero_moot", "x");
  fs::remove_all(dir);
  neox::train(neox::parse_config(zero_config(dir, "local", 4, 2, 2), "z.toml", {"plugins.optimizer=adamw"}));
  EXPECT_NE(neox::test::read_text(dir + "/runs/r/train.log")
                .find("training.zero_stage 2 on one rank: nothing to "
                      "partition, optimizer adamw"),
            std::string::npos);
  EXPECT_TRUE(fs::exists(dir + "/ckpt/global_step2/optimizer.safetensors"));
  fs::remove_all(dir);
}

// ---------------------------------------------------------------- mpirun

using neox::test::why_no_mpirun;
std::string mpirun(int np) { return neox::test::mpirun_prefix(np, 180); }

// Runs `neox train` on np ranks with the config text; returns the output.
std::string run_ranks(int np, const std::string& dir, const std::string& config, const std::string& sets = "") {
  fs::create_directories(dir);
  const std::string cfg = dir + "/train.toml";
  std::ofstream(cfg) << config;
  auto r = run_mpirun(mpirun(np) + neox::test::neox_binary() + " train " + cfg + " " + sets);
  EXPECT_EQ(r.status, 0) << r.output;
  return r.output;
}

// (ranks, stage, zero_overlap_comm)
class ZeroRanks : public ::testing::TestWithParam<std::tuple<int, int, bool>> {};

TEST_P(ZeroRanks, TrainLikeOneProcessWithAPartOfTheState) {
  const std::string why = why_no_mpirun();
  if (!why.empty()) GTEST_SKIP() << "no MPI: " << why;
  const auto [np, stage, overlap] = GetParam();
  const Reference& ref = reference();
  const std::string dir =
      neox::test::temp_dir("zero_mpi", std::to_string(np) + "_" + std::to_string(stage) + (overlap ? "_overlap" : ""));
  fs::remove_all(dir);
  // As a GPT-NeoX config says it: optimizer adamw and a zero_stage. With
  // overlap the reduce-scatters run during backward: same results, same bytes.
  const std::string out = run_ranks(
      np, dir, zero_config(dir, "mpi", 4 / np, stage),
      std::string("--set plugins.optimizer=adamw") + (overlap ? " --set training.zero_overlap_comm=true" : ""));
  EXPECT_NE(out.find("ZeRO stage " + std::to_string(stage) + " over " + std::to_string(np) + " ranks"),
            std::string::npos)
      << out;
  if (overlap) {
    EXPECT_NE(out.find("reduce-scattered during backward (zero_overlap_comm)"), std::string::npos) << out;
    // Stage 3 prefetches along step 1's order: per micro-batch, forward
    // gathers the 4 units and backward the 2 blocks again; 2 micro-batches.
    if (stage == 3) {
      EXPECT_NE(out.find("prefetches each unit's parameters along the first step's order (12 gathers per step)"),
                std::string::npos)
          << out;
      // All but the first forward's embedding, which nothing comes before.
      EXPECT_NE(out.find("stage 3 prefetch: 11 of the 12 gathers of step 2 arrived prefetched"), std::string::npos)
          << out;
    }
  }
  expect_close(neox::test::read_losses(dir + "/runs/r/metrics.jsonl").train, ref.result.train_losses, 1e-5);
  EXPECT_LT(
      weights_error(ref.dir + "/ckpt/global_step20/model.safetensors", dir + "/ckpt/global_step20/model.safetensors"),
      1e-5);
  for (int r = 0; r < np; ++r)
    EXPECT_TRUE(fs::exists(dir + "/ckpt/global_step20/optimizer.rank" + std::to_string(r) + ".safetensors")) << r;

  // Memory by the plugin's and the arena's own accounting, the largest rank.
  // One process holds m and v, 8 bytes per parameter (Psi parameters). One
  // rank's part is Psi/N plus at most one element of padding per piece (the
  // 4 layers' parameters cut into pieces of <= 5000 elements).
  auto one = nlohmann::json::parse(neox::test::read_text(ref.dir + "/runs/r/memory.json"));
  auto many = nlohmann::json::parse(neox::test::read_text(dir + "/runs/r/memory.json"));
  const double psi = one.at("optimizer_state_bytes").get<double>() / 8.0;
  ASSERT_GT(psi, 80000.0);
  ASSERT_EQ(one.at("arena_bytes").get<double>(), 8.0 * psi);  // f32 parameters and gradients
  const double pieces = std::ceil(psi / 5000.0) + 4.0;
  const double part = 8.0 * psi / np;
  EXPECT_GE(many.at("optimizer_state_bytes").get<double>(), part);
  EXPECT_LE(many.at("optimizer_state_bytes").get<double>(), part + 8.0 * pieces);
  const double whole_params = 4.0 * psi, whole_grads = 4.0 * psi;
  const double arena = many.at("arena_bytes").get<double>();
  const double partitions = many.at("optimizer_partition_bytes").get<double>();

  // Bytes rank 0 sent in step 1 (the communicator's ring-algorithm count)
  // against the theory for Psi bytes of f32 parameters, N ranks, A = 2
  // micro-batches: stage 1 reduce-scatters once and all-gathers once,
  // 2 (N-1)/N Psi; stage 2 reduce-scatters every micro-batch, (A+1) (N-1)/N
  // Psi; stage 3 per micro-batch gathers everything for forward, the blocks
  // again for backward (the embedding's backward reads no weights and the
  // output layer stays gathered from its forward) and reduce-scatters,
  // A (N-1)/N (2 Psi + blocks). Plus two 8-byte scalar all-reduces (loss,
  // gradient norm).
  std::ifstream metrics(dir + "/runs/r/metrics.jsonl");
  std::string first;
  std::getline(metrics, first);
  const double sent = nlohmann::json::parse(first).at("comm_bytes").get<double>();
  // Every step sends the same (a prefetch that was not used would add a
  // unit's all-gather).
  for (std::string line; std::getline(metrics, line);) {
    const auto rec = nlohmann::json::parse(line);
    if (!rec.contains("split")) {
      EXPECT_EQ(rec.at("comm_bytes").get<double>(), sent) << line;
    }
  }
  const double f = (np - 1.0) / np, psi_bytes = 4.0 * psi, blocks_bytes = 4.0 * (psi - 2 * 32768 - 64);
  const double theory = stage == 1   ? 2 * f * psi_bytes
                        : stage == 2 ? 3 * f * psi_bytes
                                     : 2 * f * (2 * psi_bytes + blocks_bytes);
  EXPECT_NEAR(sent, theory + 2 * 2 * f * 8, 1e-3 * theory) << "stage " << stage;

  switch (stage) {
    case 1:  // whole parameters and gradients; the partition holds the gradient part
      EXPECT_EQ(arena, whole_params + whole_grads);
      EXPECT_LE(partitions, 4.0 * (psi / np + pieces));
      break;
    case 2:  // whole parameters only; gradients in the partition, never whole
      EXPECT_EQ(arena, whole_params);
      EXPECT_EQ(many.at("arena_peak_bytes").get<double>(), whole_params);
      EXPECT_LE(partitions, 4.0 * (psi / np + pieces));
      break;
    case 3: {  // nothing whole between layers: master weights and gradients in the partition
      EXPECT_EQ(arena, 0.0);
      EXPECT_GE(partitions, 8.0 * psi / np);
      EXPECT_LE(partitions, 8.0 * (psi / np + pieces));
      // Never the whole model, not even while initialising or saving: at
      // start-up one unit at a time (the largest is the output layer, its
      // norm and its 1024 x 32 matrix), over the run at most the output
      // layer's parameters and gradients (it stays gathered from its
      // forward to its backward) and one block's worth more; with overlap
      // also one prefetched unit (at most the 1024 x 32 embedding). Whole,
      // the parameters and gradients are 8 Psi.
      const double output_unit = 4.0 * (1024 * 32 + 2 * 32), block_unit = 4.0 * 12704, embedding_unit = 4.0 * 1024 * 32;
      const double bound = 2.0 * output_unit + block_unit + (overlap ? embedding_unit : 0.0);
      EXPECT_EQ(many.at("arena_peak_bytes").get<double>(), output_unit);
      EXPECT_LE(many.at("arena_peak_bytes_run").get<double>(), bound);
      EXPECT_LT(bound, 0.65 * (whole_params + whole_grads));
      break;
    }
  }
  fs::remove_all(dir);
}

std::string zero_ranks_name(const ::testing::TestParamInfo<ZeroRanks::ParamType>& info) {
  return "np" + std::to_string(std::get<0>(info.param)) + "_stage" + std::to_string(std::get<1>(info.param)) +
         (std::get<2>(info.param) ? "_overlap" : "");
}
INSTANTIATE_TEST_SUITE_P(RanksAndStages, ZeroRanks,
                         ::testing::Combine(::testing::Values(2, 4), ::testing::Values(1, 2, 3),
                                            ::testing::Values(false)),
                         zero_ranks_name);
INSTANTIATE_TEST_SUITE_P(OverlapComm, ZeroRanks,
                         ::testing::Values(std::make_tuple(2, 2, true), std::make_tuple(4, 2, true),
                                           std::make_tuple(2, 3, true)),
                         zero_ranks_name);

// neox bench comm --train-steps: the counted bytes per step equal neox's
// schedule for DP and every stage (ratio printed to 4 decimals).
TEST(ZeroBench, BytesPerStepMatchTheSchedule) {
  const std::string why = why_no_mpirun();
  if (!why.empty()) GTEST_SKIP() << "no MPI: " << why;
  const std::string dir = neox::test::temp_dir("zero_bench", "x");
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream(dir + "/c.toml") << zero_config(dir, "mpi", 2, 0);
  auto r = run_mpirun(mpirun(2) + neox::test::neox_binary() + " bench comm --sizes 4K --runs 1 --config " + dir +
                      "/c.toml --train-steps 1");
  ASSERT_EQ(r.status, 0) << r.output;
  for (const char* stage : {"DP ", "ZeRO-1 ", "ZeRO-2 ", "ZeRO-3 "}) {
    const auto at = r.output.find(std::string("\n") + stage);
    ASSERT_NE(at, std::string::npos) << stage << r.output;
    const std::string line = r.output.substr(at + 1, r.output.find('\n', at + 1) - at - 1);
    EXPECT_NE(line.find(" 1.0000 "), std::string::npos) << line;
  }
  fs::remove_all(dir);
}

// ZeRO-3 saves stream model.safetensors from rank 0 while every rank
// gathers one unit at a time. Here rank 0 cannot write past 256 KiB once
// MPI is up (prlimit --fsize; SIGXFSZ ignored, so writes fail with EFBIG):
// its 182 KB optimizer shard fits, the 364 KB model file fails half-way.
// The other ranks must not be left waiting in a gather: the job ends
// non-zero with rank 0's error naming the file, nothing is installed, and
// the step-10 checkpoint stays the latest and loadable.
TEST(ZeroFaults, AStreamedSaveThatFailsOnRankZeroKeepsThePreviousCheckpoint) {
  const std::string why = why_no_mpirun();
  if (!why.empty()) GTEST_SKIP() << "no MPI: " << why;
  if (run_command("command -v prlimit").status != 0) GTEST_SKIP() << "prlimit (util-linux) is missing";
  const std::string dir = neox::test::temp_dir("zero_save_fault", "x");
  fs::remove_all(dir);
  run_ranks(4, dir + "/a", zero_config(dir, "mpi", 1, 3), "--set training.exit_interval=10");
  ASSERT_TRUE(fs::exists(dir + "/ckpt/global_step10/model.safetensors"));
  // Rank 0 gets its file-size limit when its run directory appears (after MPI_Init).
  const std::string wrapper = dir + "/rank0_limited.sh";
  std::ofstream(wrapper) << "trap '' XFSZ\n"
                            "if [ \"$OMPI_COMM_WORLD_RANK\" != 0 ]; then exec \"$@\"; fi\n"
                            "\"$@\" & pid=$!\n"
                            "for i in $(seq 1200); do [ -e "
                         << dir
                         << "/runs/b/metrics.jsonl ] && break; sleep 0.05; done\n"
                            "prlimit --pid $pid --fsize=262144\n"
                            "wait $pid\n";
  const auto t0 = std::chrono::steady_clock::now();
  auto r =
      run_mpirun(mpirun(4) + "bash " + wrapper + " " + neox::test::neox_binary() + " train " + dir +
                 "/a/train.toml --set training.load=" + dir +
                 "/ckpt --set training.run_name=b --set training.train_iters=40 --set training.checkpoint_factor=30");
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("model.safetensors"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("File too large"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("not responding"), std::string::npos) << r.output;  // nobody waited for a gather
  EXPECT_LT(took, 60.0) << r.output;
  EXPECT_EQ(neox::test::read_text(dir + "/ckpt/latest"), "global_step10\n");
  EXPECT_FALSE(fs::exists(dir + "/ckpt/global_step30"));
  for (const auto& e : fs::directory_iterator(dir + "/ckpt"))
    EXPECT_NE(e.path().filename().string().rfind(".tmp", 0), 0u) << e.path();
  // Still loadable: resumes and finishes.
  run_ranks(4, dir + "/c", zero_config(dir, "mpi", 1, 3),
            "--set training.load=" + dir + "/ckpt --set training.run_name=c --set training.save=" + dir + "/ckpt2");
  EXPECT_TRUE(fs::exists(dir + "/ckpt2/global_step20/model.safetensors"));
  fs::remove_all(dir);
}

class ZeroReshard : public ::testing::TestWithParam<std::tuple<int, int, int>> {};

// Saved on `from` ranks at step 10, resumed on `to` ranks (same global
// batch): steps 11-20 have the uninterrupted run's losses.
TEST_P(ZeroReshard, ResumesOnAnotherNumberOfRanks) {
  const std::string why = why_no_mpirun();
  if (!why.empty()) GTEST_SKIP() << "no MPI: " << why;
  const auto [from, to, stage] = GetParam();
  const Reference& ref = reference();
  const std::string dir =
      neox::test::temp_dir("zero_reshard", std::to_string(from) + std::to_string(to) + "_" + std::to_string(stage));
  fs::remove_all(dir);
  run_ranks(from, dir + "/a", zero_config(dir, "mpi", 4 / from, stage), "--set training.exit_interval=10");
  ASSERT_TRUE(fs::exists(dir + "/ckpt/global_step10/optimizer.rank" + std::to_string(from - 1) + ".safetensors"));
  const std::string out = run_ranks(to, dir + "/b", zero_config(dir, "mpi", 4 / to, stage),
                                    "--set training.load=" + dir + "/ckpt --set training.run_name=b");
  EXPECT_NE(out.find("resuming from"), std::string::npos) << out;
  expect_close(neox::test::read_losses(dir + "/runs/b/metrics.jsonl").train,
               {ref.result.train_losses.begin() + 10, ref.result.train_losses.end()}, 1e-5, 11);
  EXPECT_LT(
      weights_error(ref.dir + "/ckpt/global_step20/model.safetensors", dir + "/ckpt/global_step20/model.safetensors"),
      1e-5);
  fs::remove_all(dir);
}

// Buckets of 6 elements on 4 ranks: a piece of 6 is split in parts of 2
// for ranks 0-2, and the units' last pieces (2 elements: the units have
// 32768, 12704 and 32832 elements) in parts of 1 for ranks 0-1, so rank 3
// owns no element of any piece and no optimizer state at all. It
// still writes its (empty) shard, so the checkpoint is complete and resumes
// with the uninterrupted run's losses (rank 3 was once taken for an
// unpartitioned optimizer: its shard was missing and the load asked it for
// the whole arena).
TEST(ZeroTinyBuckets, ARankThatOwnsNothingSavesAndResumes) {
  const std::string why = why_no_mpirun();
  if (!why.empty()) GTEST_SKIP() << "no MPI: " << why;
  const Reference& ref = reference();
  const std::string dir = neox::test::temp_dir("zero_reshard", "owns_nothing");
  fs::remove_all(dir);
  const std::string tiny = "--set training.zero_reduce_bucket_size=6 --set training.checkpoint_factor=2 ";
  run_ranks(4, dir + "/a", zero_config(dir, "mpi", 1, 1), tiny + "--set training.exit_interval=2");
  const std::string shard3 = dir + "/ckpt/global_step2/optimizer.rank3.safetensors";
  ASSERT_TRUE(fs::exists(shard3));
  EXPECT_EQ(neox::SafeTensorsFile::open(shard3).info("exp_avg").shape, std::vector<std::int64_t>{0});
  const std::string out =
      run_ranks(4, dir + "/b", zero_config(dir, "mpi", 1, 1),
                tiny + "--set training.exit_interval=4 --set training.load=" + dir + "/ckpt --set training.run_name=b");
  EXPECT_NE(out.find("resuming from"), std::string::npos) << out;
  expect_close(neox::test::read_losses(dir + "/runs/b/metrics.jsonl").train,
               {ref.result.train_losses.begin() + 2, ref.result.train_losses.begin() + 4}, 1e-5, 3);
  fs::remove_all(dir);
}

// Under mpirun the save directory is locked and checked by rank 0, and
// every rank agrees: a fresh run into a used save directory stops on every
// rank before training (no hang, nothing written); a ZeRO checkpoint's
// state.json records every rank's shard (size and CRC32C), and a shard that
// does not match is refused on every rank.
TEST(ZeroSaveDirectory, RefusalsReachEveryRankAndShardsAreChecksummed) {
  const std::string why = why_no_mpirun();
  if (!why.empty()) GTEST_SKIP() << "no MPI: " << why;
  const std::string dir = neox::test::temp_dir("zero_save_dir", "x");
  run_ranks(2, dir + "/a", zero_config(dir, "mpi", 2, 2), "--set training.exit_interval=10");
  const std::string step = dir + "/ckpt/global_step10";
  const auto state = nlohmann::json::parse(neox::test::read_text(step + "/state.json"));
  for (const char* shard : {"optimizer.rank0.safetensors", "optimizer.rank1.safetensors"}) {
    ASSERT_TRUE(state["files"].contains(shard)) << state.dump();
    const std::string bytes = neox::test::read_text(step + "/" + shard);
    EXPECT_EQ(state["files"][shard]["bytes"].get<std::int64_t>(), static_cast<std::int64_t>(bytes.size())) << shard;
  }
  EXPECT_FALSE(fs::exists(dir + "/ckpt/.lock")) << "the run released its lock";
  const std::string latest = neox::test::read_text(dir + "/ckpt/latest");

  const std::string train = mpirun(2) + neox::test::neox_binary() + " train " + dir + "/a/train.toml ";
  const auto t0 = std::chrono::steady_clock::now();
  auto r = run_mpirun(train + "--set training.run_name=b");
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("training.save = " + dir + "/ckpt already holds the checkpoints of a run"), std::string::npos)
      << r.output;
  EXPECT_EQ(r.output.find("not responding"), std::string::npos) << r.output;
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 60.0);
  EXPECT_FALSE(fs::exists(dir + "/runs/b")) << "refused before the run directory";

  std::string bytes = neox::test::read_text(step + "/optimizer.rank1.safetensors");
  bytes[bytes.size() - 3] ^= 0x10;
  std::ofstream(step + "/optimizer.rank1.safetensors", std::ios::binary | std::ios::trunc) << bytes;
  r = run_mpirun(train + "--set training.run_name=c --set training.load=" + dir + "/ckpt");
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find(step + "/optimizer.rank1.safetensors: CRC32C "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("no complete checkpoint"), std::string::npos) << r.output;
  EXPECT_EQ(neox::test::read_text(dir + "/ckpt/latest"), latest);
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Layouts, ZeroReshard,
                         ::testing::Values(std::make_tuple(4, 2, 1), std::make_tuple(2, 4, 2), std::make_tuple(4, 2, 3),
                                           std::make_tuple(2, 4, 3)),
                         [](const auto& info) {
                           return "from" + std::to_string(std::get<0>(info.param)) + "_to" +
                                  std::to_string(std::get<1>(info.param)) + "_stage" +
                                  std::to_string(std::get<2>(info.param));
                         });

}  // namespace
