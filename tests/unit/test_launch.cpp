// SPDX-License-Identifier: Apache-2.0
// neox::detect_launch (core/src/runtime/launch.cpp): each launcher's variables, as
// the launchers set them, alone and nested (mpirun in a Slurm step, PMIx and
// PMI under srun, torchrun under srun, a batch script), and the errors for
// values that are not ranks and counts.
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <string>

#include "neox/launch.h"
#include "test_support.h"

namespace {

using neox::Launcher;
using neox::LaunchInfo;
using Env = std::map<std::string, std::string>;

LaunchInfo detect(const Env& env) {
  return neox::detect_launch([&env](const char* name) -> const char* {
    auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  });
}

std::string error_for(const Env& env) {
  return neox::test::error_of([&] { detect(env); });
}

// All of launcher, rank, size, local rank and local size.
void expect_place(const LaunchInfo& info, Launcher launcher, int rank, int size, int local_rank, int local_size) {
  EXPECT_EQ(info.launcher, launcher) << neox::launcher_name(info.launcher);
  EXPECT_EQ(info.rank, rank);
  EXPECT_EQ(info.world_size, size);
  EXPECT_EQ(info.local_rank, local_rank);
  EXPECT_EQ(info.local_size, local_size);
}

bool notes_mention(const LaunchInfo& info, const std::string& what) {
  for (const auto& n : info.notes)
    if (n.find(what) != std::string::npos) return true;
  return false;
}

std::string all_notes(const LaunchInfo& info) {
  std::string s;
  for (const auto& n : info.notes) s += n + "\n";
  return s;
}

// What srun sets for task `procid` of a step of `tasks` tasks laid out as
// `per_node` ("2(x3),1"), on node `node`, local task `local`.
Env slurm_step(int procid, int tasks, int local, const std::string& per_node, int node) {
  return {{"SLURM_JOB_ID", "4242"},
          {"SLURM_STEP_ID", "0"},
          {"SLURM_PROCID", std::to_string(procid)},
          {"SLURM_STEP_NUM_TASKS", std::to_string(tasks)},
          {"SLURM_NTASKS", std::to_string(tasks)},
          {"SLURM_LOCALID", std::to_string(local)},
          {"SLURM_STEP_TASKS_PER_NODE", per_node},
          {"SLURM_TASKS_PER_NODE", per_node},
          {"SLURM_NODEID", std::to_string(node)}};
}

Env merged(Env a, const Env& b) {
  for (const auto& [k, v] : b) a[k] = v;
  return a;
}

TEST(Launch, NoLauncherIsRankZeroOfOne) {
  const LaunchInfo info = detect({{"HOME", "/root"}});
  expect_place(info, Launcher::none, 0, 1, 0, 1);
  EXPECT_FALSE(info.mpi_launched());
  EXPECT_TRUE(info.notes.empty());
  EXPECT_TRUE(info.master_addr.empty());
  EXPECT_EQ(info.str(), "rank 0 of 1 (local 0 of 1), no launcher");
}

TEST(Launch, EmptyVariablesAreUnset) {
  expect_place(detect({{"RANK", ""}, {"WORLD_SIZE", ""}, {"OMPI_COMM_WORLD_RANK", ""}}), Launcher::none, 0, 1, 0, 1);
}

TEST(Launch, OpenMpi) {
  const LaunchInfo info = detect({{"OMPI_COMM_WORLD_RANK", "5"},
                                  {"OMPI_COMM_WORLD_SIZE", "8"},
                                  {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                                  {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"}});
  expect_place(info, Launcher::open_mpi, 5, 8, 1, 4);
  EXPECT_TRUE(info.mpi_launched());
  EXPECT_TRUE(info.notes.empty()) << all_notes(info);
  EXPECT_EQ(info.str(), "rank 5 of 8 (local 1 of 4) from Open MPI (mpirun)");
}

// mpirun inside an sbatch allocation starts its daemons with srun (one
// task per node): the processes inherit that step's SLURM_* (task 1 of 2),
// but mpirun started them, as rank 5 of 8.
TEST(Launch, MpirunInsideSlurmWins) {
  const Env env = merged(slurm_step(1, 2, 0, "1(x2)", 1), {{"OMPI_COMM_WORLD_RANK", "5"},
                                                           {"OMPI_COMM_WORLD_SIZE", "8"},
                                                           {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                                                           {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"}});
  const LaunchInfo info = detect(env);
  expect_place(info, Launcher::open_mpi, 5, 8, 1, 4);
  EXPECT_TRUE(notes_mention(info, "SLURM_PROCID=1")) << all_notes(info);
  EXPECT_TRUE(notes_mention(info, "SLURM_STEP_NUM_TASKS=2")) << all_notes(info);
  EXPECT_TRUE(notes_mention(info, "Open MPI (mpirun) started this process")) << all_notes(info);
}

// A bad value in a source that does not win is not an error, only a note.
TEST(Launch, BadValuesOfIgnoredSourcesAreNotes) {
  Env env = merged(slurm_step(0, 4, 0, "4", 0), {{"OMPI_COMM_WORLD_RANK", "0"},
                                                 {"OMPI_COMM_WORLD_SIZE", "4"},
                                                 {"OMPI_COMM_WORLD_LOCAL_RANK", "0"},
                                                 {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"}});
  env["SLURM_STEP_NUM_TASKS"] = "lots";
  const LaunchInfo info = detect(env);
  expect_place(info, Launcher::open_mpi, 0, 4, 0, 4);
  EXPECT_TRUE(notes_mention(info, "SLURM_STEP_NUM_TASKS=lots")) << all_notes(info);
}

// srun --mpi=pmix: PMIX_RANK, with the size and the node from Slurm.
TEST(Launch, PmixUnderSrunTakesTheSizeFromSlurm) {
  const LaunchInfo info = detect(merged(slurm_step(3, 8, 1, "2(x4)", 1), {{"PMIX_RANK", "3"}}));
  expect_place(info, Launcher::pmix, 3, 8, 1, 2);
  EXPECT_TRUE(info.mpi_launched());
  EXPECT_TRUE(info.notes.empty()) << all_notes(info);
  EXPECT_EQ(info.str(), "rank 3 of 8 (local 1 of 2) from PMIx");
}

TEST(Launch, PmixAloneHasNoSize) {
  const std::string e = error_for({{"PMIX_RANK", "3"}});
  EXPECT_NE(e.find("PMIX_RANK=3"), std::string::npos) << e;
  EXPECT_NE(e.find("number of processes"), std::string::npos) << e;
}

// MPICH's Hydra: PMI_RANK, PMI_SIZE and the node's MPI_LOCALRANKID/NRANKS.
TEST(Launch, PmiHydra) {
  const LaunchInfo info =
      detect({{"PMI_RANK", "2"}, {"PMI_SIZE", "4"}, {"MPI_LOCALRANKID", "0"}, {"MPI_LOCALNRANKS", "2"}});
  expect_place(info, Launcher::pmi, 2, 4, 0, 2);
  EXPECT_TRUE(info.mpi_launched());
}

// srun --mpi=pmi2: PMI_RANK and PMI_SIZE; the node comes from Slurm.
TEST(Launch, Pmi2UnderSrunTakesTheNodeFromSlurm) {
  const LaunchInfo info =
      detect(merged(slurm_step(5, 6, 1, "4,2", 1), {{"PMI_RANK", "5"}, {"PMI_SIZE", "6"}, {"PMI_FD", "7"}}));
  expect_place(info, Launcher::pmi, 5, 6, 1, 2);
}

// A step of 6 tasks in a 12-task allocation, 4 on node 0 and 2 on node 1.
TEST(Launch, SlurmStep) {
  Env env = slurm_step(5, 6, 1, "4,2", 1);
  env["SLURM_NTASKS"] = "12";  // the allocation's; the step's count wins
  env["SLURM_TASKS_PER_NODE"] = "8,4";
  const LaunchInfo info = detect(env);
  expect_place(info, Launcher::slurm, 5, 6, 1, 2);
  EXPECT_FALSE(info.mpi_launched());
  EXPECT_EQ(info.str(), "rank 5 of 6 (local 1 of 2) from Slurm (srun)");
}

// Older Slurm: SLURM_STEPID, SLURM_NTASKS, SLURM_TASKS_PER_NODE; or only
// SLURM_NTASKS_PER_NODE (srun --ntasks-per-node).
TEST(Launch, SlurmFallbackVariables) {
  expect_place(detect({{"SLURM_STEPID", "3"},
                       {"SLURM_PROCID", "6"},
                       {"SLURM_NTASKS", "9"},
                       {"SLURM_LOCALID", "0"},
                       {"SLURM_TASKS_PER_NODE", "3(x3)"},
                       {"SLURM_NODEID", "2"}}),
               Launcher::slurm, 6, 9, 0, 3);
  expect_place(detect({{"SLURM_STEP_ID", "0"},
                       {"SLURM_PROCID", "3"},
                       {"SLURM_NTASKS", "4"},
                       {"SLURM_LOCALID", "1"},
                       {"SLURM_NTASKS_PER_NODE", "2"}}),
               Launcher::slurm, 3, 4, 1, 2);
}

// A batch script is one process with SLURM_PROCID=0 and SLURM_NTASKS=N but
// no step: it is not rank 0 of N (it would wait for N-1 peers forever).
TEST(Launch, SlurmBatchScriptIsNotALaunch) {
  const LaunchInfo info = detect({{"SLURM_JOB_ID", "4242"},
                                  {"SLURM_PROCID", "0"},
                                  {"SLURM_NTASKS", "8"},
                                  {"SLURM_LOCALID", "0"},
                                  {"SLURM_TASKS_PER_NODE", "4(x2)"},
                                  {"SLURM_NODEID", "0"}});
  expect_place(info, Launcher::none, 0, 1, 0, 1);
}

// torchrun under srun (one agent per node): torchrun spawned the process.
TEST(Launch, TorchrunUnderSrunWins) {
  const LaunchInfo info = detect(merged(slurm_step(1, 2, 0, "1(x2)", 1), {{"TORCHELASTIC_RUN_ID", "job7"},
                                                                          {"RANK", "5"},
                                                                          {"WORLD_SIZE", "8"},
                                                                          {"LOCAL_RANK", "1"},
                                                                          {"LOCAL_WORLD_SIZE", "4"},
                                                                          {"MASTER_ADDR", "node1"},
                                                                          {"MASTER_PORT", "29500"}}));
  expect_place(info, Launcher::torchrun, 5, 8, 1, 4);
  EXPECT_FALSE(info.mpi_launched());
  EXPECT_EQ(info.master_addr, "node1");
  EXPECT_EQ(info.master_port, "29500");
  EXPECT_TRUE(notes_mention(info, "SLURM_PROCID=1")) << all_notes(info);
}

// RANK/WORLD_SIZE without torchrun: the weakest source, below mpirun's.
TEST(Launch, EnvironmentVariables) {
  expect_place(detect({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "1"}, {"LOCAL_WORLD_SIZE", "2"}}),
               Launcher::env, 1, 2, 1, 2);
  const LaunchInfo under_mpirun = detect({{"RANK", "0"},
                                          {"WORLD_SIZE", "1"},
                                          {"OMPI_COMM_WORLD_RANK", "1"},
                                          {"OMPI_COMM_WORLD_SIZE", "2"},
                                          {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                                          {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}});
  expect_place(under_mpirun, Launcher::open_mpi, 1, 2, 1, 2);
  EXPECT_TRUE(notes_mention(under_mpirun, "RANK=0")) << all_notes(under_mpirun);
}

// Without a local rank and size: one node, local rank = rank.
TEST(Launch, MissingLocalValuesAssumeOneNode) {
  const LaunchInfo info = detect({{"RANK", "2"}, {"WORLD_SIZE", "3"}});
  expect_place(info, Launcher::env, 2, 3, 2, 3);
  EXPECT_TRUE(notes_mention(info, "no local size")) << all_notes(info);
  EXPECT_TRUE(notes_mention(info, "no local rank")) << all_notes(info);
  // With a local size only: rank modulo the local size.
  expect_place(detect({{"RANK", "5"}, {"WORLD_SIZE", "8"}, {"LOCAL_WORLD_SIZE", "4"}}), Launcher::env, 5, 8, 1, 4);
}

// Every error names the variable and its value.
TEST(Launch, BadValuesNameTheVariable) {
  struct Case {
    Env env;
    std::string expected;
  };
  const Case cases[] = {
      {{{"RANK", "abc"}, {"WORLD_SIZE", "2"}}, "RANK='abc' is not a non-negative integer"},
      {{{"RANK", "0"}, {"WORLD_SIZE", "2x"}}, "WORLD_SIZE='2x' is not a non-negative integer"},
      {{{"OMPI_COMM_WORLD_RANK", "-1"}, {"OMPI_COMM_WORLD_SIZE", "2"}},
       "OMPI_COMM_WORLD_RANK='-1' is not a non-negative integer"},
      {{{"RANK", " 1"}, {"WORLD_SIZE", "2"}}, "RANK=' 1' is not a non-negative integer"},
      {{{"RANK", "99999999999"}, {"WORLD_SIZE", "2"}}, "RANK='99999999999' is not a non-negative integer"},
      {{{"RANK", "4"}, {"WORLD_SIZE", "4"}}, "RANK=4 is not below WORLD_SIZE=4"},
      {{{"PMI_RANK", "0"}, {"PMI_SIZE", "0"}}, "PMI_SIZE=0: a job has at least one process"},
      {{{"RANK", "1"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "2"}, {"LOCAL_WORLD_SIZE", "2"}},
       "LOCAL_RANK=2 is not below LOCAL_WORLD_SIZE=2"},
      {{{"RANK", "1"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "0"}, {"LOCAL_WORLD_SIZE", "5"}},
       "LOCAL_WORLD_SIZE=5 is not between 1 and WORLD_SIZE=4"},
      {{{"WORLD_SIZE", "4"}}, "WORLD_SIZE=4 is set but RANK is not"},
      // LOCAL_RANK alone once chose the GPU: now the backend's `device` option does.
      {{{"LOCAL_RANK", "1"}}, "LOCAL_RANK=1 is set but RANK is not"},
      {{{"LOCAL_RANK", "two"}}, "LOCAL_RANK='two' is not a non-negative integer"},
      {slurm_step(0, 4, 0, "2(x2", 0), "SLURM_STEP_TASKS_PER_NODE='2(x2' is not a list of task counts"},
      {slurm_step(0, 4, 0, "2,2", 2), "SLURM_NODEID=2 is not a node of SLURM_STEP_TASKS_PER_NODE='2,2' (2 nodes)"},
  };
  for (const Case& c : cases) {
    const std::string e = error_for(c.env);
    EXPECT_NE(e.find(c.expected), std::string::npos) << "expected '" << c.expected << "' in: " << e;
    EXPECT_EQ(e.rfind("launch environment: ", 0), 0u) << e;
  }
}

// The process environment, through the overload without arguments.
TEST(Launch, ReadsTheProcessEnvironment) {
  const char* names[] = {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
                         "OMPI_COMM_WORLD_LOCAL_SIZE"};
  const char* values[] = {"1", "3", "0", "1"};
  std::map<std::string, std::string> saved;
  for (int i = 0; i < 4; ++i) {
    if (const char* old = std::getenv(names[i])) saved[names[i]] = old;
    setenv(names[i], values[i], 1);
  }
  const LaunchInfo info = neox::detect_launch();
  for (const char* n : names) {
    auto it = saved.find(n);
    if (it == saved.end())
      unsetenv(n);
    else
      setenv(n, it->second.c_str(), 1);
  }
  EXPECT_EQ(info.launcher, Launcher::open_mpi);
  EXPECT_EQ(info.rank, 1);
  EXPECT_EQ(info.world_size, 3);
  EXPECT_EQ(info.local_size, 1);
}

}  // namespace
