// SPDX-License-Identifier: Apache-2.0
#include "run_log.h"

#include <spdlog/sinks/ansicolor_sink.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <functional>

#include "event_file.h"
#include "neox/error.h"

namespace neox {

namespace fs = std::filesystem;

namespace {

std::string timestamp() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d_%H-%M-%S", &tm);
  return buf;
}

// Clears the bar's line so that a log line can be printed over it.
class BarAwareSink final : public spdlog::sinks::sink {
 public:
  BarAwareSink(std::shared_ptr<spdlog::sinks::sink> inner, bool* bar_shown)
      : inner_(std::move(inner)), bar_shown_(bar_shown) {}
  void log(const spdlog::details::log_msg& msg) override {
    if (*bar_shown_) {
      std::fputs("\r\033[K", stderr);
      *bar_shown_ = false;
    }
    inner_->log(msg);
  }
  void flush() override { inner_->flush(); }
  void set_pattern(const std::string& pattern) override { inner_->set_pattern(pattern); }
  void set_formatter(std::unique_ptr<spdlog::formatter> f) override { inner_->set_formatter(std::move(f)); }

 private:
  std::shared_ptr<spdlog::sinks::sink> inner_;
  bool* bar_shown_;
};

}  // namespace

std::string format_duration(double seconds) {
  if (!(seconds >= 0) || !std::isfinite(seconds)) return "--:--";
  long s = std::lround(seconds);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%02ld:%02ld", s / 60, s % 60);
  return buf;
}

RunLog::RunLog(const std::string& log_dir, const std::string& run_name, int rank, int world, bool tensorboard)
    : rank_(rank) {
  terminal_ = rank == 0 && isatty(STDERR_FILENO);
  auto console = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  // mpirun gives its ranks a pseudo-terminal whatever it writes to (a log
  // file, a pipe): colours only for a single process on a terminal.
  if (world > 1) console->set_color_mode(spdlog::color_mode::never);
  std::vector<spdlog::sink_ptr> sinks{std::make_shared<BarAwareSink>(console, &bar_shown_)};
  if (rank == 0) {
    std::error_code ec;
    if (run_name.empty()) {
      // Named by the time: a run started in the same second (a sweep, a
      // second job) gets "-2", "-3"... instead of writing into this one.
      fs::create_directories(log_dir.empty() ? fs::path(".") : fs::path(log_dir), ec);
      if (ec) throw Error(log_dir + ": cannot create the log directory: " + ec.message());
      const std::string base = (fs::path(log_dir) / timestamp()).string();
      for (int k = 1;; ++k) {
        dir_ = k == 1 ? base : base + "-" + std::to_string(k);
        if (fs::create_directory(dir_, ec)) break;
        if (ec) throw Error(dir_ + ": cannot create the run directory: " + ec.message());
      }
    } else {
      // Named by the user: a resumed run may continue its directory.
      dir_ = (fs::path(log_dir) / run_name).string();
      fs::create_directories(dir_, ec);
      if (ec) throw Error(dir_ + ": cannot create the run directory: " + ec.message());
    }
    metrics_.open(fs::path(dir_) / "metrics.jsonl", std::ios::app);
    if (!metrics_) throw Error(dir_ + "/metrics.jsonl: cannot open for writing");
    sinks.push_back(std::make_shared<spdlog::sinks::basic_file_sink_mt>((fs::path(dir_) / "train.log").string()));
    if (tensorboard) events_ = std::make_unique<EventFileWriter>(dir_);
  }
  logger_ = std::make_shared<spdlog::logger>("train", sinks.begin(), sinks.end());
  logger_->set_pattern(world > 1 ? "[%H:%M:%S] [rank " + std::to_string(rank) + "] %^%l%$ %v" : "[%H:%M:%S] %^%l%$ %v");
  logger_->set_level(rank == 0 ? spdlog::level::info : spdlog::level::warn);
  logger_->flush_on(spdlog::level::info);
  if (world > 1) {
    // The rest of the process logs through spdlog's default logger (e.g.
    // checkpoint loading): give it the same rank prefix, and keep ranks
    // other than 0 to warnings and errors there too.
    auto def = spdlog::default_logger();
    def->set_pattern("[%H:%M:%S] [rank " + std::to_string(rank) + "] %^%l%$ %v");
    for (auto& sink : def->sinks())
      if (auto color = std::dynamic_pointer_cast<spdlog::sinks::ansicolor_sink<spdlog::details::console_mutex>>(sink))
        color->set_color_mode(spdlog::color_mode::never);
    if (rank != 0 && def->level() < spdlog::level::warn) def->set_level(spdlog::level::warn);
  }
}

RunLog::~RunLog() { end_progress(); }

void RunLog::write_config(const std::string& toml_text) {
  if (rank_ != 0) return;
  std::ofstream out(fs::path(dir_) / "config.toml");
  out << toml_text;
  if (!out) throw Error(dir_ + "/config.toml: cannot write");
}

void RunLog::write_json(const std::string& name, const nlohmann::json& value) {
  if (rank_ != 0) return;
  std::ofstream out(fs::path(dir_) / name);
  out << value.dump(2) << "\n";
  if (!out) throw Error(dir_ + "/" + name + ": cannot write");
}

void RunLog::metrics(const nlohmann::json& record) {
  if (rank_ != 0) return;
  metrics_ << record.dump() << "\n";
  metrics_.flush();
}

void RunLog::scalars(std::int64_t step, const std::vector<std::pair<std::string, double>>& values) {
  write_events([&] {
    for (const auto& [tag, value] : values) events_->add_scalar(tag, value, step);
  });
}

void RunLog::start_session(std::int64_t first_step) {
  write_events([&] { events_->add_session_start(first_step); });
}

void RunLog::write_events(const std::function<void()>& write) {
  if (!events_) return;
  try {
    write();
    events_->flush();
  } catch (const Error& e) {
    logger_->warn("{}; no more TensorBoard events are written (metrics.jsonl goes on)", e.what());
    events_.reset();
  }
}

void RunLog::progress(std::int64_t step, std::int64_t total, double loss, double tokens_per_s, double eta_s) {
  if (!terminal_) return;
  const int width = 30;
  const double frac = total > 0 ? static_cast<double>(step) / static_cast<double>(total) : 1.0;
  const int filled = static_cast<int>(frac * width);
  std::string bar(static_cast<std::size_t>(filled), '=');
  if (filled < width) bar += '>' + std::string(static_cast<std::size_t>(width - filled - 1), ' ');
  std::fprintf(stderr, "\r\033[K[%s] %lld/%lld loss %.4f | %.0f tok/s | ETA %s", bar.c_str(),
               static_cast<long long>(step), static_cast<long long>(total), loss, tokens_per_s,
               format_duration(eta_s).c_str());
  std::fflush(stderr);
  bar_shown_ = true;
}

void RunLog::end_progress() {
  if (bar_shown_) {
    std::fputs("\r\033[K", stderr);
    std::fflush(stderr);
    bar_shown_ = false;
  }
}

}  // namespace neox
