// SPDX-License-Identifier: Apache-2.0
// The `nccl` comm plugin (plugins/comm-nccl); its TCP rendezvous, which
// needs no GPU, is tested in tests/distributed/test_tcp_rendezvous.cpp.
//
// NcclComm.* need the plugin (built where CUDA and NCCL are found): without a GPU they check that it loads,
// that options and the launch environment are checked first, and that
// making it throws DeviceUnavailable; the GPU tests run
// tests/support/nccl_collectives_check.cpp as one rank, as two processes meeting at
// MASTER_ADDR:MASTER_PORT, and under mpirun. They skip without a GPU unless
// NEOX_TEST_REQUIRE_CUDA=1.
//
// Two ranks on one GPU: NCCL refuses them at init ("Duplicate GPU
// detected": ranks on one host must use different GPUs), which the plugin
// reports with what to do. Giving each process its own NCCL_HOSTID makes
// NCCL treat them as two hosts talking over sockets (here the loopback),
// which is how the two-process tests run every collective on one GPU.
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "neox/communicator.h"
#include "neox/error.h"
#include "neox/options.h"
#include "neox/plugin.h"
#include "neox/registry.h"
#include "test_support.h"

namespace fs = std::filesystem;
using neox::test::error_of;
using neox::test::free_port;
using neox::test::run_command;
using neox::test::ScopedEnv;

namespace {

// ------------------------------------------------------------------ the plugin

std::string plugin_path() { return neox::test::build_plugin_dir() + "/neox_comm_nccl.so"; }
bool plugin_built() { return fs::exists(plugin_path()); }

#ifdef NEOX_NCCL_CHECK_BINARY
const std::string kCheckBinary = neox::test::env_or(
    "NEOX_TEST_NCCL_CHECK_BINARY", neox::test::build_dir_or("bin/neox_nccl_collectives_check", NEOX_NCCL_CHECK_BINARY));
#else
const std::string kCheckBinary = neox::test::env_or("NEOX_TEST_NCCL_CHECK_BINARY", "");
#endif

bool require_cuda() {
  const char* v = std::getenv("NEOX_TEST_REQUIRE_CUDA");
  return v && *v && std::string(v) != "0";
}

bool nvidia_device_present() { return fs::exists("/dev/nvidia0") || fs::exists("/dev/nvidiactl"); }

#define SKIP_UNLESS_PLUGIN_BUILT()                                                                     \
  do {                                                                                                 \
    if (!plugin_built())                                                                               \
      GTEST_SKIP() << "the nccl plugin is not built (no " << plugin_path()                             \
                   << "; it is built where CMake finds CUDA and NCCL: -DNEOX_WITH_NCCL=ON to insist)"; \
  } while (0)

// The GPU tests: the plugin, the check program and a GPU.
#define REQUIRE_NCCL_GPU()                                                                                  \
  do {                                                                                                      \
    if (require_cuda() && !plugin_built())                                                                  \
      FAIL() << "NEOX_TEST_REQUIRE_CUDA is set, but the nccl plugin is not at " << plugin_path();           \
    SKIP_UNLESS_PLUGIN_BUILT();                                                                             \
    if (kCheckBinary.empty() || !fs::exists(kCheckBinary)) {                                                \
      if (require_cuda()) FAIL() << "NEOX_TEST_REQUIRE_CUDA is set, but " << kCheckBinary << " is missing"; \
      GTEST_SKIP() << "tests/nccl_collectives_check was not built (" << kCheckBinary << ")";                \
    }                                                                                                       \
    if (!nvidia_device_present()) {                                                                         \
      if (require_cuda()) FAIL() << "NEOX_TEST_REQUIRE_CUDA is set, but there is no NVIDIA device";         \
      GTEST_SKIP() << "no NVIDIA device (/dev/nvidia0)";                                                    \
    }                                                                                                       \
  } while (0)

// Sets environment variables for a scope (unset: nullptr), then restores them.

// The plugin's factory itself (not through the registry), so that the type
// of what it throws shows.
neox::CommFactory direct_factory() {
  void* handle = dlopen(plugin_path().c_str(), RTLD_NOW | RTLD_LOCAL);  // kept loaded
  if (!handle) throw std::runtime_error(std::string("dlopen: ") + dlerror());
  auto entry = reinterpret_cast<const neox::PluginDescriptor* (*)()>(dlsym(handle, NEOX_PLUGIN_ENTRY_SYMBOL));
  if (!entry) throw std::runtime_error("no " NEOX_PLUGIN_ENTRY_SYMBOL " in " + plugin_path());
  return reinterpret_cast<neox::CommFactory>(const_cast<void*>(entry()->factory));
}

// The factory's error, and whether it was DeviceUnavailable; "" when it made
// a communicator (a GPU is there).
struct FactoryOutcome {
  std::string error;
  bool device_unavailable = false;
  std::unique_ptr<neox::Communicator> comm;
};

FactoryOutcome make_directly(const neox::Options& options) {
  FactoryOutcome out;
  try {
    out.comm.reset(direct_factory()(options));
  } catch (const neox::DeviceUnavailable& e) {
    out.error = e.what();
    out.device_unavailable = true;
  } catch (const neox::Error& e) {
    out.error = e.what();
  }
  return out;
}

// No launcher: a job of one (NCCL on the loopback where a GPU makes it).
const std::map<std::string, const char*> kNoLauncher = {{"RANK", nullptr},
                                                        {"WORLD_SIZE", nullptr},
                                                        {"LOCAL_RANK", nullptr},
                                                        {"LOCAL_WORLD_SIZE", nullptr},
                                                        {"OMPI_COMM_WORLD_RANK", nullptr},
                                                        {"OMPI_COMM_WORLD_SIZE", nullptr},
                                                        {"PMIX_RANK", nullptr},
                                                        {"PMI_RANK", nullptr},
                                                        {"SLURM_STEP_ID", nullptr},
                                                        {"SLURM_STEPID", nullptr},
                                                        {"TORCHELASTIC_RUN_ID", nullptr},
                                                        {"NCCL_SOCKET_IFNAME", "lo"}};

TEST(NcclComm, PluginLoadsWithoutADriver) {
  SKIP_UNLESS_PLUGIN_BUILT();
  neox::PluginInfo info = neox::PluginRegistry::check_file(plugin_path());
  EXPECT_EQ(info.kind, neox::PluginKind::comm);
  EXPECT_EQ(info.name, "nccl");
  neox::PluginRegistry registry({neox::test::build_plugin_dir()});
  bool listed = false;
  for (const auto& p : registry.plugins()) listed = listed || (p.kind == neox::PluginKind::comm && p.name == "nccl");
  EXPECT_TRUE(listed);
}

// Without a GPU: DeviceUnavailable, saying so. With one: rank 0 of 1.
TEST(NcclComm, WithoutGpuThrowsDeviceUnavailable) {
  SKIP_UNLESS_PLUGIN_BUILT();
  ScopedEnv env(kNoLauncher);
  FactoryOutcome out = make_directly(neox::Options("plugins.options.nccl"));
  if (out.comm) {
    EXPECT_EQ(out.comm->rank(), 0);
    EXPECT_EQ(out.comm->size(), 1);
    return;
  }
  EXPECT_TRUE(out.device_unavailable) << out.error;
  EXPECT_NE(out.error.find("comm 'nccl': no CUDA device available"), std::string::npos) << out.error;
}

// Options and the launch environment are checked before the GPU is looked
// for, so that configuration errors show on any machine.
TEST(NcclComm, ConfigurationErrorsComeBeforeTheDevice) {
  SKIP_UNLESS_PLUGIN_BUILT();
  ScopedEnv env(kNoLauncher);
  struct Case {
    std::string key;
    neox::Options::Value value;
    std::string expected;
  };
  const Case cases[] = {
      {"bootstrap", std::string("udp"), "bootstrap"},
      {"timeout_s", -1.0, "timeout_s"},
      {"timeout", std::int64_t{5}, "timeout"},
      {"device", std::int64_t{-2}, "device"},
  };
  for (const Case& c : cases) {
    neox::Options options("plugins.options.nccl");
    options.set(c.key, c.value);
    FactoryOutcome out = make_directly(options);
    EXPECT_FALSE(out.device_unavailable) << out.error;
    EXPECT_NE(out.error.find("plugins.options.nccl." + c.expected), std::string::npos) << out.error;
  }
}

TEST(NcclComm, LaunchEnvironmentErrorsComeBeforeTheDevice) {
  SKIP_UNLESS_PLUGIN_BUILT();
  {
    ScopedEnv env({{"RANK", "abc"}, {"WORLD_SIZE", "2"}});
    FactoryOutcome out = make_directly(neox::Options("plugins.options.nccl"));
    EXPECT_FALSE(out.device_unavailable) << out.error;
    EXPECT_NE(out.error.find("RANK='abc' is not a non-negative integer"), std::string::npos) << out.error;
  }
  {
    ScopedEnv env({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", nullptr}, {"MASTER_PORT", nullptr}});
    neox::Options options("plugins.options.nccl");
    options.set("bootstrap", std::string("tcp"));
    FactoryOutcome out = make_directly(options);
    EXPECT_FALSE(out.device_unavailable) << out.error;
    EXPECT_NE(out.error.find("rank 1 of 2"), std::string::npos) << out.error;
    EXPECT_NE(out.error.find("needs MASTER_ADDR and MASTER_PORT"), std::string::npos) << out.error;
  }
  {
    ScopedEnv env({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "http"}});
    neox::Options options("plugins.options.nccl");
    options.set("bootstrap", std::string("tcp"));
    FactoryOutcome out = make_directly(options);
    EXPECT_NE(out.error.find("MASTER_PORT='http' is not a port number"), std::string::npos) << out.error;
  }
}

// ------------------------------------------------------------------ on a GPU

std::string check_command(const std::string& args) {
  return kCheckBinary + " " + neox::test::build_plugin_dir() + " " + args;
}

// No launcher around the check, NCCL on the loopback (every rank is on this
// machine, which may have no other network), and NCCL's warnings in the
// output that a failed test prints.
const char* kAlone =
    "env -u RANK -u WORLD_SIZE -u LOCAL_RANK -u OMPI_COMM_WORLD_RANK -u OMPI_COMM_WORLD_SIZE -u PMIX_RANK "
    "-u PMI_RANK -u SLURM_STEP_ID -u SLURM_STEPID -u TORCHELASTIC_RUN_ID NCCL_SOCKET_IFNAME=lo NCCL_IB_DISABLE=1 "
    "NCCL_DEBUG=WARN ";

// Environment of a job of `n` started by hand, meeting at 127.0.0.1:port.
std::string tcp_job_env(int port, int n) {
  return std::string(kAlone) + "MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(port) +
         " WORLD_SIZE=" + std::to_string(n) + " LOCAL_WORLD_SIZE=" + std::to_string(n) + " ";
}

// Two processes of the check with RANK 0 and 1; both exit statuses count.
// With `distinct_hosts`, each has its own NCCL_HOSTID: NCCL treats them as
// two hosts talking over sockets, so that they may share a GPU.
neox::test::CommandResult two_processes(const std::string& args, bool distinct_hosts) {
  const std::string env = tcp_job_env(free_port(), 2);
  auto rank = [&](int r) {
    return env + "RANK=" + std::to_string(r) + " LOCAL_RANK=" + std::to_string(r) +
           (distinct_hosts ? " NCCL_HOSTID=neox-test-host-" + std::to_string(r) : std::string()) + " timeout 120 " +
           check_command(args);
  };
  return run_command("( " + rank(0) + " & p0=$!; " + rank(1) +
                     " & p1=$!; wait $p0; s0=$?; wait $p1; s1=$?; exit $((s0 | s1)) )");
}

bool has(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

TEST(NcclComm, EveryCollectiveOnOneRank) {
  REQUIRE_NCCL_GPU();
  auto r = run_command(std::string(kAlone) + "timeout 120 " + check_command("--timeout 60"));
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r.output, "rank 0 of 1: OK")) << r.output;
}

TEST(NcclComm, TcpBootstrapOnOneRank) {
  REQUIRE_NCCL_GPU();
  auto r = run_command(tcp_job_env(free_port(), 1) + "RANK=0 LOCAL_RANK=0 timeout 120 " +
                       check_command("--bootstrap tcp --timeout 60"));
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r.output, "rank 0 of 1: OK")) << r.output;
}

// Every collective, two processes over the TCP bootstrap, one GPU each or
// both on one (as two NCCL hosts).
TEST(NcclComm, TwoProcessesOverTcpBootstrap) {
  REQUIRE_NCCL_GPU();
  auto r = two_processes("--bootstrap tcp --timeout 90", /*distinct_hosts=*/true);
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r.output, "rank 0 of 2: OK")) << r.output;
  EXPECT_TRUE(has(r.output, "rank 1 of 2: OK")) << r.output;
}

// Without distinct host ids, two ranks on one GPU are refused by NCCL; the
// error names the operation, NCCL's words and what to do. Where there are
// two GPUs, the ranks take one each and the check passes.
TEST(NcclComm, TwoRanksOnOneGpuAreRefusedClearly) {
  REQUIRE_NCCL_GPU();
  auto r = two_processes("--bootstrap tcp --timeout 60", /*distinct_hosts=*/false);
  if (!has(r.output, "init: NCCL error")) {
    EXPECT_EQ(r.status, 0) << r.output;
    EXPECT_TRUE(has(r.output, "rank 1 of 2: OK")) << r.output;
    return;
  }
  EXPECT_NE(r.status, 0) << r.output;
  for (const char* part : {"comm 'nccl' (rank 0 of 2, cuda:0): init: NCCL error", "comm 'nccl' (rank 1 of 2, cuda:0)",
                           "NCCL takes one rank per GPU", "the communicator was aborted"})
    EXPECT_TRUE(has(r.output, part)) << "'" << part << "' not in:\n" << r.output;
}

// Rank 1 dies after init; rank 0's all_reduce ends within the timeout with
// an error naming the rank and the operation, not a hang.
TEST(NcclComm, DeadPeerGivesAnErrorNotAHang) {
  REQUIRE_NCCL_GPU();
  const auto start = std::chrono::steady_clock::now();
  auto r = two_processes("--bootstrap tcp --timeout 8 --dead-peer", /*distinct_hosts=*/true);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r.output, "rank 0 of 2: OK")) << r.output;
  EXPECT_LT(took, 60.0) << r.output;
}

// ------------------------------------------------------------------ training over NCCL

// A small model on the cuda backend, f32, global batch 4 (4 sequences per
// step: micro-batch x 2 accumulation x ranks), 10 steps.
std::string nccl_train_config(const std::string& dir, const std::string& optimizer, int micro_batch) {
  return R"([plugins]
backend = "cuda"
comm = "nccl"
optimizer = ")" +
         optimizer + R"("
data = "mmap"
[plugins.options.mmap]
data_path = ")" +
         neox::test::testdata_dir() + R"(/megatron/corpus_a"
split = "80,15,5"
[plugins.options.nccl]
timeout_s = 60
[model]
num_layers = 3
hidden_size = 64
num_attention_heads = 4
vocab_size = 1000
seq_length = 32
max_position_embeddings = 32
rotary_pct = 0.25
gpt_j_residual = true
[optimizer]
lr = 1e-3
warmup = 0.2
gradient_clipping = 1.0
weight_decay = 0.01
[training]
precision = "fp32"
train_micro_batch_size_per_gpu = )" +
         std::to_string(micro_batch) + R"(
gradient_accumulation_steps = 2
train_iters = 10
eval_iters = 0
log_interval = 1
checkpoint_factor = 10
zero_stage = 3
zero_overlap_comm = true
zero_reduce_bucket_size = 20000
zero_allgather_bucket_size = 20000
log_dir = ")" +
         dir + R"(/runs"
run_name = "r"
save = ")" +
         dir + R"(/ckpt"
)";
}

// ZeRO-3 with overlap and prefetch over NCCL, two processes sharing the GPU
// as two NCCL hosts (TCP bootstrap), against one process with adamw: the
// same losses, nothing whole in the arena, and a checkpoint with the same
// tensors. Exercises the started collectives on the GPU (reduce-scatter
// during backward, prefetched all-gathers) and the unit-by-unit weights.
TEST(NcclComm, ZeroStage3OnTwoProcessesTrainsLikeOne) {
  REQUIRE_NCCL_GPU();
  const std::string dir = neox::test::temp_dir("nccl_zero3", "x");
  fs::create_directories(dir + "/one");
  fs::create_directories(dir + "/two");
  {
    std::ofstream(dir + "/one/c.toml") << nccl_train_config(dir + "/one", "adamw", 2);
    std::ofstream(dir + "/two/c.toml") << nccl_train_config(dir + "/two", "zero", 1);
  }
  auto one = run_command(std::string(kAlone) + "timeout 180 " + neox::test::neox_binary() + " train " + dir +
                         "/one/c.toml --set training.zero_stage=0 --set training.zero_overlap_comm=false");
  ASSERT_EQ(one.status, 0) << one.output;
  const std::string env = tcp_job_env(free_port(), 2);
  auto rank = [&](int r) {
    return env + "RANK=" + std::to_string(r) + " LOCAL_RANK=" + std::to_string(r) + " NCCL_HOSTID=neox-test-host-" +
           std::to_string(r) + " timeout 180 " + neox::test::neox_binary() + " train " + dir + "/two/c.toml";
  };
  auto two = run_command("( " + rank(0) + " & p0=$!; " + rank(1) +
                         " & p1=$!; wait $p0; s0=$?; wait $p1; s1=$?; exit $((s0 | s1)) )");
  ASSERT_EQ(two.status, 0) << two.output;
  EXPECT_TRUE(has(two.output, "ZeRO stage 3 over 2 ranks")) << two.output;
  EXPECT_TRUE(has(two.output, "prefetches each unit's parameters")) << two.output;
  const auto a = neox::test::read_losses(dir + "/one/runs/r/metrics.jsonl").train,
             b = neox::test::read_losses(dir + "/two/runs/r/metrics.jsonl").train;
  ASSERT_EQ(a.size(), 10u) << one.output;
  ASSERT_EQ(b.size(), 10u) << two.output;
  // f32 on the GPU; the reductions' order differs (1e-4: cuBLAS may pick
  // other kernels for the half-size micro-batch).
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(b[i], a[i], 1e-4 * std::abs(a[i])) << "step " << i + 1;
  const std::string memory = neox::test::read_text(dir + "/two/runs/r/memory.json");
  EXPECT_TRUE(has(memory, "\"arena_bytes\": 0") || has(memory, "\"arena_bytes\":0")) << memory;
  EXPECT_TRUE(fs::exists(dir + "/two/ckpt/global_step10/model.safetensors"));
  EXPECT_TRUE(fs::exists(dir + "/two/ckpt/global_step10/optimizer.rank1.safetensors"));
  fs::remove_all(dir);
}

// Under mpirun (MPI bootstrap), each rank its own NCCL host id.
TEST(NcclComm, TwoRanksUnderMpirun) {
  REQUIRE_NCCL_GPU();
  if (run_command("command -v mpirun").status != 0) GTEST_SKIP() << "mpirun is not on PATH";
  const std::string cmd =
      "OMPI_MCA_btl_vader_single_copy_mechanism=none timeout 180 mpirun --oversubscribe --allow-run-as-root "
      "--mca btl self,vader -x NEOX_PLUGIN_PATH -x LD_LIBRARY_PATH -np 2 sh -c '"
      "NCCL_SOCKET_IFNAME=lo NCCL_IB_DISABLE=1 NCCL_HOSTID=neox-test-host-$OMPI_COMM_WORLD_RANK exec " +
      check_command("--bootstrap mpi --timeout 90") + "'";
  auto r = run_command(cmd);
  if (has(r.output, "built without MPI")) GTEST_SKIP() << "the nccl plugin was built without MPI";
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(has(r.output, "rank 0 of 2: OK")) << r.output;
  EXPECT_TRUE(has(r.output, "rank 1 of 2: OK")) << r.output;
}

}  // namespace
