// SPDX-License-Identifier: Apache-2.0
// A training run's directory and its outputs: config.toml as used,
// metrics.jsonl (one JSON object per line), memory.json, train.log, the
// TensorBoard event file (event_file.h), and the console view (plain lines, or
// a live progress bar when stderr is a terminal).
#pragma once

#include <spdlog/logger.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace neox {

class EventFileWriter;

class RunLog {
 public:
  // Creates log_dir/run_name (a timestamp when empty). rank 0 writes files
  // and the console (and draws the progress bar); other ranks only log
  // warnings and errors. With world > 1 every console line, spdlog's default
  // logger's included, carries "[rank r]". With `tensorboard`, rank 0 also
  // starts a new TensorBoard event file in the directory (a resumed run adds
  // one; earlier files are never rewritten).
  RunLog(const std::string& log_dir, const std::string& run_name, int rank, int world, bool tensorboard);
  ~RunLog();

  const std::string& dir() const { return dir_; }
  void write_config(const std::string& toml_text);
  // Writes dir()/name (rank 0 only), e.g. memory.json.
  void write_json(const std::string& name, const nlohmann::json& value);
  void metrics(const nlohmann::json& record);
  // The same logging interval's numbers as TensorBoard scalars (tag, value) at
  // `step`, written and flushed together: a crash loses at most the
  // interval being logged. A write error is logged once as a warning and
  // ends the event file, not the training.
  void scalars(std::int64_t step, const std::vector<std::pair<std::string, double>>& values);
  // Marks the first step this run will log (the step after a resumed
  // checkpoint's): TensorBoard then drops what an earlier run of the same
  // directory logged from that step on (after its last checkpoint).
  void start_session(std::int64_t first_step);
  spdlog::logger& log() { return *logger_; }
  // Redraws the progress bar (terminal only): step of total, loss, tokens/s, ETA.
  void progress(std::int64_t step, std::int64_t total, double loss, double tokens_per_s, double eta_s);
  void end_progress();
  bool is_terminal() const { return terminal_; }

 private:
  // Runs `write` on the event file and flushes; a write error is logged once
  // and ends the event file.
  void write_events(const std::function<void()>& write);

  std::string dir_;
  int rank_;
  bool terminal_ = false;
  bool bar_shown_ = false;
  std::ofstream metrics_;
  std::unique_ptr<EventFileWriter> events_;
  std::shared_ptr<spdlog::logger> logger_;
};

// "1:02:03" or "02:03".
std::string format_duration(double seconds);

}  // namespace neox
