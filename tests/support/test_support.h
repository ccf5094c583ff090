// SPDX-License-Identifier: Apache-2.0
// Helpers shared by the tests: where the test data, the plugins, the neox
// binary and the source tree are; a shell command's exit status and output.
#pragma once

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "neox/error.h"

namespace neox::test {

// Paths. CMake compiles in where they are in the build that made the test
// binary; each can be overridden at run time, so that the binary and its
// build tree can run elsewhere (another checkout, a GPU machine that got a
// copy of the build):
//   NEOX_TEST_TESTDATA_DIR      the reference data (default ../shared/testdata)
//   NEOX_TEST_SOURCE_DIR        the source tree (configs/, tests/)
//   NEOX_TEST_BUILD_DIR         a build tree: sets the three below as
//                               BUILD/plugins, BUILD/tests/plugins, BUILD/bin/neox
//   NEOX_TEST_PLUGIN_BUILD_DIR  the plugins of the build
//   NEOX_TEST_TEST_PLUGIN_DIR   the deliberately broken plugins of tests/plugins
//   NEOX_TEST_BINARY            the neox executable
// A variable that is unset or empty leaves the default.
inline std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : fallback;
}
// NEOX_TEST_BUILD_DIR + "/" + sub, or `fallback` when it is not set.
inline std::string build_dir_or(const char* sub, const std::string& fallback) {
  const char* b = std::getenv("NEOX_TEST_BUILD_DIR");
  return b && *b ? std::string(b) + "/" + sub : fallback;
}
inline std::string testdata_dir() { return env_or("NEOX_TEST_TESTDATA_DIR", NEOX_TESTDATA_DIR); }
inline std::string source_dir() { return env_or("NEOX_TEST_SOURCE_DIR", NEOX_SOURCE_DIR); }
inline std::string build_plugin_dir() {
  return env_or("NEOX_TEST_PLUGIN_BUILD_DIR", build_dir_or("plugins", NEOX_BUILD_PLUGIN_DIR));
}
inline std::string test_plugin_dir() {
  return env_or("NEOX_TEST_TEST_PLUGIN_DIR", build_dir_or("tests/plugins", NEOX_TEST_PLUGIN_DIR));
}
inline std::string neox_binary() { return env_or("NEOX_TEST_BINARY", build_dir_or("bin/neox", NEOX_BINARY)); }

// Runs `f` and returns the message of the neox::Error it throws; a test
// failure (and "") if it throws nothing or another exception.
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const neox::Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected a neox::Error, got another exception: " << e.what();
    return {};
  }
  ADD_FAILURE() << "expected a neox::Error";
  return {};
}

struct CommandResult {
  int status = -1;     // exit status; -1 if it did not exit normally
  std::string output;  // stdout and stderr together
};

// Runs `command` with /bin/sh, stderr joined to stdout.
inline CommandResult run_command(const std::string& command) {
  CommandResult r;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return r;
  std::array<char, 4096> buf{};
  while (std::size_t n = std::fread(buf.data(), 1, buf.size(), pipe)) r.output.append(buf.data(), n);
  const int st = pclose(pipe);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

// Runs the neox binary of this build with `args`.
inline CommandResult run_neox(const std::string& args) { return run_command(neox_binary() + " " + args); }

// The losses of a run's metrics.jsonl: one per logged training step, and
// one per evaluation (the lines with a "split"), in file order.
struct RunLosses {
  std::vector<double> train;
  std::vector<double> eval;
};
inline RunLosses read_losses(const std::string& metrics_path) {
  RunLosses out;
  std::ifstream in(metrics_path);
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    (j.contains("split") ? out.eval : out.train).push_back(j.at("loss").get<double>());
  }
  return out;
}

// The whole file as text ("" when it cannot be read).
inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The mpirun prefix of the MPI tests for np ranks: shared memory only
// (vader, single-copy off for containers), oversubscribed cores, root
// allowed, one OpenMP thread per rank, and a wall-clock limit.
inline std::string mpirun_prefix(int np, int timeout_s = 120) {
  return "OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_rmaps_base_oversubscribe=1 timeout " +
         std::to_string(timeout_s) +
         " mpirun --oversubscribe --allow-run-as-root --mca btl self,vader -x OMP_NUM_THREADS=1 -x NEOX_PLUGIN_PATH "
         "-np " +
         std::to_string(np) + " ";
}

// Why `neox` cannot run under mpirun here, or "" when it can.
inline std::string why_no_mpirun() {
  const std::string plugin = build_plugin_dir() + "/neox_comm_mpi.so";
  if (!std::filesystem::exists(plugin))
    return "the mpi comm plugin was not built (" + plugin +
           " is missing; install libopenmpi-dev openmpi-bin and reconfigure)";
  if (run_command("command -v mpirun").status != 0) return "mpirun is not on PATH (apt-get install openmpi-bin)";
  return "";
}

// Open MPI's own start-up failures (the runtime, before any code under test
// ran): messages that neox and the test programs never print.
inline bool mpi_startup_failed(const CommandResult& r) {
  if (r.status == 0) return false;
  for (const char* sign : {"It looks like MPI_INIT failed", "It looks like orte_init failed",
                           "It looks like opal_init failed", "ORTE_ERROR_LOG", "PMIX ERROR", "opal_shmem_base_select",
                           "mpirun was unable to launch", "ompi_mpi_init: ompi_rte_init failed"})
    if (r.output.find(sign) != std::string::npos) return true;
  return false;
}

// Runs an mpirun command line (mpirun_prefix + program). When Open MPI itself
// failed to start (seen once in CI, two 4-rank jobs starting together on 2
// cores), waits a moment and tries once more, saying so on stderr; a failure
// of the program under test is returned as it is.
inline CommandResult run_mpirun(const std::string& command) {
  CommandResult r = run_command(command);
  if (mpi_startup_failed(r)) {
    std::fprintf(stderr, "note: Open MPI failed to start; retrying once. Its output was:\n%s\n", r.output.c_str());
    ::usleep(500 * 1000);
    r = run_command(command);
  }
  return r;
}

// A fresh, empty directory <TempDir>/<prefix>_<name>_<pid> (removed first
// if a previous run left it).
inline std::string temp_dir(const std::string& prefix, const std::string& name) {
  namespace fs = std::filesystem;
  fs::path p = fs::path(::testing::TempDir()) / (prefix + "_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

// Sets (value) or clears (nullptr) environment variables for one scope and
// restores what was there before.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : ScopedEnv(std::map<std::string, const char*>{{name, value}}) {}
  explicit ScopedEnv(const std::map<std::string, const char*>& values) {
    for (const auto& [name, value] : values) {
      const char* old = std::getenv(name.c_str());
      saved_[name] = old ? std::optional<std::string>(old) : std::nullopt;
      if (value)
        ::setenv(name.c_str(), value, 1);
      else
        ::unsetenv(name.c_str());
    }
  }
  ~ScopedEnv() {
    for (const auto& [name, old] : saved_)
      if (old)
        ::setenv(name.c_str(), old->c_str(), 1);
      else
        ::unsetenv(name.c_str());
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::map<std::string, std::optional<std::string>> saved_;
};

// A loopback TCP port that was free a moment ago (the kernel's choice for port 0).
inline int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  const bool ok = fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  if (fd >= 0) ::close(fd);
  if (!ok) throw std::runtime_error("free_port: no socket");
  return ntohs(a.sin_port);
}

// A Hugging Face reference case's prompt and its greedy continuation
// (../shared/testdata/hf/NAME/expected.json: greedy_output holds both).
struct GreedyCase {
  std::vector<std::int32_t> prompt, continuation;
};
inline GreedyCase hf_greedy_case(const std::string& name) {
  std::ifstream in(testdata_dir() + "/hf/" + name + "/expected.json");
  const auto e = nlohmann::json::parse(in);
  GreedyCase g;
  g.prompt = e["greedy_prompt"].get<std::vector<std::int32_t>>();
  const auto all = e["greedy_output"].get<std::vector<std::int32_t>>();
  g.continuation.assign(all.begin() + static_cast<std::ptrdiff_t>(g.prompt.size()), all.end());
  return g;
}

}  // namespace neox::test
