// SPDX-License-Identifier: Apache-2.0
// Helpers shared by the tests that run commands: a shell command's exit
// status and output, and the neox binary.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "neox/error.h"

namespace neox::test {

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
inline CommandResult run_neox(const std::string& args) { return run_command(std::string(NEOX_BINARY) + " " + args); }

// The whole file as text ("" when it cannot be read).
inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace neox::test
