// SPDX-License-Identifier: Apache-2.0
// A training run's directory and its outputs: config.toml as used,
// metrics.jsonl (one JSON object per line), memory.json, train.log, and the console view
// (plain lines, or a live progress bar when stderr is a terminal).
#pragma once

#include <spdlog/logger.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

namespace neox {

class RunLog {
 public:
  // Creates log_dir/run_name (a timestamp when empty). rank 0 writes files
  // and the console (and draws the progress bar); other ranks only log
  // warnings and errors. With world > 1 every console line, spdlog's default
  // logger's included, carries "[rank r]".
  RunLog(const std::string& log_dir, const std::string& run_name, int rank, int world);
  ~RunLog();

  const std::string& dir() const { return dir_; }
  void write_config(const std::string& toml_text);
  // Writes dir()/name (rank 0 only), e.g. memory.json.
  void write_json(const std::string& name, const nlohmann::json& value);
  void metrics(const nlohmann::json& record);
  spdlog::logger& log() { return *logger_; }
  // Redraws the progress bar (terminal only): step of total, loss, tokens/s, ETA.
  void progress(std::int64_t step, std::int64_t total, double loss, double tokens_per_s, double eta_s);
  void end_progress();
  bool is_terminal() const { return terminal_; }

 private:
  std::string dir_;
  int rank_;
  bool terminal_ = false;
  bool bar_shown_ = false;
  std::ofstream metrics_;
  std::shared_ptr<spdlog::logger> logger_;
};

// "1:02:03" or "02:03".
std::string format_duration(double seconds);

}  // namespace neox
