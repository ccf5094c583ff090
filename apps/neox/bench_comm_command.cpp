// SPDX-License-Identifier: Apache-2.0
// neox bench comm [--comm NAME] [--sizes 4K,64K,1M,16M,64M] [--runs R] [--warmup W]
//                 [--ops all_reduce,reduce_scatter,all_gather,broadcast] [--json FILE]
//                 [--config FILE] [--set k=v]...
//
// Times the collectives of a comm plugin, one message size at a time, under
// the conventions of nccl-tests: `size` is the buffer of all_reduce and
// broadcast, the (whole) input of reduce_scatter and the (whole) output of
// all_gather; each rank times W untimed and then R timed calls and the
// figure is the largest mean over the ranks; algbw = size / time and
// busbw = algbw x 2(N-1)/N (all_reduce), (N-1)/N (reduce_scatter,
// all_gather) or 1 (broadcast), which makes busbw comparable with the
// link's bandwidth whatever N.
//
// Beside the times it prints the bytes the communicator counted
// (Communicator::stats(), per call, rank 0's figure) and the ring-algorithm
// formula of neox/communicator.h for rank 0, and whether every rank's count
// equals its own formula. Start it with mpirun (`mpirun -np 4 neox bench
// comm`); --config gives plugin search paths and the plugin's options (e.g.
// [plugins.options.mpi] timeout_s). Rank 0 prints the table and writes
// --json (to a temporary name, then renamed).
//
// --train-steps S (with a --config that trains, e.g. configs/tiny-cpu.toml)
// then trains S steps of that config once per --stages entry (0 = plain data
// parallelism, 1-3 = ZeRO) over the same comm plugin and prints the bytes
// one rank sent per step, counted by the communicator, next to neox's own
// schedule and DeepSpeed's round figures (2 Psi for DP and stages 1-2, 3 Psi
// for stage 3; Psi = f32 parameter bytes; docs/reference/distributed.md).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli_options.h"
#include "commands.h"
#include "neox/communicator.h"
#include "neox/error.h"
#include "neox/train/config.h"
#include "neox/train/trainer.h"

namespace neox::app {

namespace {

using Clock = std::chrono::steady_clock;

const std::vector<std::string> kOps = {"all_reduce", "reduce_scatter", "all_gather", "broadcast"};

// "4K", "64K", "1M", "1G" (powers of 1024) or a plain number of bytes.
std::int64_t parse_size(const std::string& text) {
  std::size_t end = 0;
  long long n = -1;
  try {
    n = std::stoll(text, &end);
  } catch (const std::exception&) {
  }
  std::int64_t scale = 1;
  const std::string suffix = end < text.size() ? text.substr(end) : "";
  if (suffix == "K" || suffix == "k")
    scale = 1 << 10;
  else if (suffix == "M" || suffix == "m")
    scale = 1 << 20;
  else if (suffix == "G" || suffix == "g")
    scale = 1 << 30;
  else if (!suffix.empty())
    n = -1;
  if (n <= 0)
    throw Error("bench comm: --sizes: '" + text + "' is not a size (a positive number of bytes, or with K, M or G)");
  return n * scale;
}

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  std::size_t at = 0;
  while (at <= text.size()) {
    const std::size_t comma = std::min(text.find(',', at), text.size());
    if (comma > at) out.push_back(text.substr(at, comma - at));
    at = comma + 1;
  }
  return out;
}

// The bus bandwidth factor of nccl-tests for `op` on `n` ranks.
double busbw_factor(const std::string& op, int n) {
  if (op == "all_reduce") return 2.0 * (n - 1) / n;
  if (op == "broadcast") return 1.0;
  return static_cast<double>(n - 1) / n;
}

// The bytes `rank` sends in one call of `op` on `size` bytes (nccl-tests'
// size; see the file comment), by the convention of neox/communicator.h;
// broadcasts are from root 0.
std::int64_t formula_bytes(const std::string& op, std::int64_t size, int rank, int n) {
  if (op == "all_reduce") return ring_all_reduce_bytes(size, n);
  if (op == "broadcast") return n > 1 && rank != n - 1 ? size : 0;
  return ring_gather_bytes(size, n);
}

// The buffers of one op at one size, and one call of it.
struct Collective {
  std::string op;
  Tensor a, b;  // all_reduce, broadcast: a; reduce_scatter: a -> b; all_gather: a -> b

  Collective(const std::string& name, std::int64_t size, int n) : op(name) {
    const std::int64_t elems = size / 4;  // f32
    if (op == "all_reduce" || op == "broadcast") {
      a = Tensor::zeros_host({elems}, DType::f32);
    } else if (op == "reduce_scatter") {
      a = Tensor::zeros_host({elems}, DType::f32);
      b = Tensor::zeros_host({elems / n}, DType::f32);
    } else {
      a = Tensor::zeros_host({elems / n}, DType::f32);
      b = Tensor::zeros_host({elems}, DType::f32);
    }
    float* p = a.ptr<float>();
    for (std::int64_t i = 0; i < a.numel(); ++i) p[i] = 1.0f;
  }

  void run(Communicator& c) {
    if (op == "all_reduce")
      c.all_reduce(a, ReduceOp::sum);
    else if (op == "reduce_scatter")
      c.reduce_scatter(a, b, ReduceOp::sum);
    else if (op == "all_gather")
      c.all_gather(a, b);
    else
      c.broadcast(a, 0);
  }
};

struct Row {
  std::string op;
  std::int64_t bytes = 0;
  double seconds = 0;            // the largest mean over the ranks
  std::int64_t counted = 0;      // rank 0's stats() bytes per call
  std::int64_t formula = 0;      // rank 0's formula
  bool all_ranks_match = false;  // every rank's count equals its formula
};

Row measure(Communicator& c, const std::string& op, std::int64_t size, int warmup, int runs) {
  const int n = c.size();
  Collective coll(op, size, n);
  c.reset_stats();
  c.barrier();
  for (int i = 0; i < warmup; ++i) coll.run(c);
  c.barrier();
  const auto t0 = Clock::now();
  for (int i = 0; i < runs; ++i) coll.run(c);
  const double mean = std::chrono::duration<double>(Clock::now() - t0).count() / runs;
  // Read before the reductions below, which the communicator counts too.
  const CommOpStats st = c.stats().ops.count(op) ? c.stats().ops.at(op) : CommOpStats{};
  const std::int64_t counted = st.calls > 0 ? st.bytes / st.calls : 0;
  const bool calls_ok = st.calls == warmup + runs && st.bytes == counted * st.calls;

  Tensor t = Tensor::zeros_host({1}, DType::f64);
  t.ptr<double>()[0] = mean;
  c.all_reduce(t, ReduceOp::max);
  Tensor mismatch = Tensor::zeros_host({1}, DType::i64);
  mismatch.ptr<std::int64_t>()[0] = calls_ok && counted == formula_bytes(op, size, c.rank(), n) ? 0 : 1;
  c.all_reduce(mismatch, ReduceOp::sum);

  Row row;
  row.op = op;
  row.bytes = size;
  row.seconds = t.ptr<double>()[0];
  row.counted = counted;
  row.formula = formula_bytes(op, size, c.rank(), n);
  row.all_ranks_match = mismatch.ptr<std::int64_t>()[0] == 0;
  return row;
}

// "64K", "16M", or the bytes.
std::string size_text(std::int64_t bytes) {
  if (bytes >= (1 << 20) && bytes % (1 << 20) == 0) return std::to_string(bytes >> 20) + "M";
  if (bytes >= (1 << 10) && bytes % (1 << 10) == 0) return std::to_string(bytes >> 10) + "K";
  return std::to_string(bytes);
}

void print_table(const std::vector<Row>& rows, const std::string& comm, int n, int warmup, int runs) {
  std::printf("comm %s, %d ranks, %d timed calls after %d warm-up; time = the largest mean over the ranks\n",
              comm.c_str(), n, runs, warmup);
  std::printf("%-15s %10s %12s %12s %12s %16s %16s %s\n", "op", "size", "time (us)", "algbw GB/s", "busbw GB/s",
              "counted B/call", "formula B/call", "all ranks match");
  for (const Row& r : rows) {
    const double algbw = r.seconds > 0 ? static_cast<double>(r.bytes) / r.seconds / 1e9 : 0.0;
    std::printf("%-15s %10s %12.1f %12.3f %12.3f %16lld %16lld %s\n", r.op.c_str(), size_text(r.bytes).c_str(),
                r.seconds * 1e6, algbw, algbw * busbw_factor(r.op, n), static_cast<long long>(r.counted),
                static_cast<long long>(r.formula), r.all_ranks_match ? "yes" : "NO");
  }
  std::printf(
      "(counted and formula: the bytes rank 0 sends per call by the ring-algorithm convention of "
      "neox/communicator.h; broadcasts from root 0)\n");
}

void write_json(const std::string& path, const std::vector<Row>& rows, const std::string& comm, int n, int warmup,
                int runs) {
  nlohmann::json j;
  j["comm"] = comm;
  j["ranks"] = n;
  j["warmup"] = warmup;
  j["runs"] = runs;
  j["results"] = nlohmann::json::array();
  for (const Row& r : rows) {
    const double algbw = r.seconds > 0 ? static_cast<double>(r.bytes) / r.seconds / 1e9 : 0.0;
    j["results"].push_back({{"op", r.op},
                            {"bytes", r.bytes},
                            {"time_s", r.seconds},
                            {"algbw_GBps", algbw},
                            {"busbw_GBps", algbw * busbw_factor(r.op, n)},
                            {"counted_bytes_per_call", r.counted},
                            {"formula_bytes_per_call", r.formula},
                            {"all_ranks_match", r.all_ranks_match}});
  }
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    out << j.dump(2) << "\n";
    if (!out) throw Error("bench comm: --json: cannot write " + tmp);
  }
  std::filesystem::rename(tmp, path);
}

// ------------------------------------------------------------------------
// Training steps: bytes per step of data parallelism and each ZeRO stage.

// The bytes one of n ranks sends per step under neox's schedule (see
// docs/reference/distributed.md, "ZeRO"), for f32 parameters.
double schedule_bytes(const ModelConfig& m, int stage, std::int64_t accumulation, int n) {
  const double f = (n - 1.0) / n;
  const double psi = 4.0 * static_cast<double>(m.num_parameters());
  const double embedding =
      4.0 * static_cast<double>(m.padded_vocab_size() * m.hidden_size +
                                (m.pos_emb == "learned" ? m.max_position_embeddings * m.hidden_size : 0));
  const double output =
      4.0 * static_cast<double>(2 * m.hidden_size + (m.no_weight_tying ? m.padded_vocab_size() * m.hidden_size : 0));
  const double blocks = psi - embedding - output;
  const double a = static_cast<double>(accumulation);
  switch (stage) {
    case 0:
    case 1:
      return 2 * f * psi;
    case 2:
      return (a + 1) * f * psi;
    default:  // forward gathers everything (the tied embedding twice), backward the blocks
      return a * f * (psi + (m.no_weight_tying ? 0.0 : embedding) + blocks + psi);
  }
}

void bench_training_steps(const Config& base, const std::string& comm_name, int n, int rank, std::int64_t steps,
                          const std::vector<int>& stages) {
  struct Result {
    int stage;
    double counted, schedule, deepspeed;
  };
  std::vector<Result> results;
  const double psi = 4.0 * static_cast<double>(base.model.num_parameters());
  for (int stage : stages) {
    Config c = base;
    c.plugins.comm = comm_name;
    c.plugins.optimizer = "adamw";  // zero_stage > 0 on several ranks makes it `zero`
    c.training.zero_stage = stage;
    c.training.train_iters = steps;
    c.training.eval_iters = 0;
    c.training.save = "";
    c.training.load = "";
    c.training.exit_interval = 0;
    c.training.log_interval = steps;
    c.training.log_dir = (std::filesystem::temp_directory_path() / "neox-bench-comm").string();
    c.training.run_name = "stage" + std::to_string(stage);
    const TrainResult r = train(c);
    results.push_back({stage, r.comm_bytes_per_step,
                       schedule_bytes(c.model, stage, c.training.gradient_accumulation_steps, n),
                       (stage == 3 ? 3.0 : 2.0) * psi * (n - 1.0) / n});
  }
  if (rank != 0) return;
  std::printf(
      "\nbytes sent per training step by one rank (%s, %d ranks, %lld steps, %lld micro-batches per step, "
      "Psi = %.0f bytes of f32 parameters)\n",
      comm_name.c_str(), n, static_cast<long long>(steps),
      static_cast<long long>(base.training.gradient_accumulation_steps), psi);
  std::printf("%-8s %16s %16s %8s %22s\n", "stage", "counted", "neox schedule", "ratio", "DeepSpeed (2/2/2/3 Psi)");
  for (const Result& r : results)
    std::printf("%-8s %16.0f %16.0f %8.4f %22.0f\n", r.stage == 0 ? "DP" : ("ZeRO-" + std::to_string(r.stage)).c_str(),
                r.counted, r.schedule, r.schedule > 0 ? r.counted / r.schedule : 0.0, r.deepspeed);
  std::printf(
      "(counted includes the loss and gradient-norm scalars; the DeepSpeed figures are (N-1)/N x its round "
      "numbers; neox's stage 3 regathers only the blocks in backward)\n");
}

}  // namespace

int bench_comm(int argc, char** argv) {
  cxxopts::Options opts("neox bench comm",
                        "Times the collectives of a comm plugin per message size (start with mpirun -np N).");
  opts.add_options()("comm", "the comm plugin", cxxopts::value<std::string>()->default_value("mpi"))(
      "sizes", "message sizes, comma-separated (bytes, or with K, M, G)",
      cxxopts::value<std::string>()->default_value("4K,64K,1M,16M,64M"))(
      "ops", "collectives, comma-separated",
      cxxopts::value<std::string>()->default_value("all_reduce,reduce_scatter,all_gather,broadcast"))(
      "runs", "timed calls per op and size", cxxopts::value<int>()->default_value("10"))(
      "warmup", "untimed calls first", cxxopts::value<int>()->default_value("2"))(
      "json", "also write the figures to this JSON file (rank 0)", cxxopts::value<std::string>())(
      "train-steps", "then train this many steps of --config per stage and print bytes per step",
      cxxopts::value<std::int64_t>()->default_value("0"))(
      "stages", "with --train-steps: 0 (data parallel) and ZeRO stages, comma-separated",
      cxxopts::value<std::string>()->default_value("0,1,2,3"))("h,help", "show this help");
  add_config_options(opts, "TOML config: plugin search paths and the comm plugin's options (optional)", false);
  auto args = opts.parse(argc, argv);
  if (args.count("help")) {
    std::cout << opts.help() << "\n";
    return 0;
  }
  const int runs = args["runs"].as<int>(), warmup = args["warmup"].as<int>();
  if (runs < 1 || warmup < 0) throw Error("bench comm: --runs must be >= 1 and --warmup >= 0");
  const std::vector<std::string> ops = split_list(args["ops"].as<std::string>());
  if (ops.empty()) throw Error("bench comm: --ops is empty");
  for (const auto& op : ops)
    if (std::find(kOps.begin(), kOps.end(), op) == kOps.end())
      throw Error("bench comm: --ops: unknown collective '" + op +
                  "' (available: all_reduce, reduce_scatter, all_gather, broadcast)");
  std::vector<std::int64_t> sizes;
  for (const auto& s : split_list(args["sizes"].as<std::string>())) sizes.push_back(parse_size(s));
  if (sizes.empty()) throw Error("bench comm: --sizes is empty");

  const Config config = config_from_args(args);
  const std::string comm_name = args["comm"].as<std::string>();
  auto registry = make_registry(config);
  std::shared_ptr<Communicator> comm = registry->make_comm(comm_name, config.plugins.options_for(comm_name));
  const int n = comm->size();

  std::vector<Row> rows;
  for (const auto& op : ops) {
    for (std::int64_t size : sizes) {
      // Whole f32 elements, a whole number of them per rank.
      const std::int64_t unit = 4 * static_cast<std::int64_t>(n);
      const std::int64_t bytes = std::max(unit, size / unit * unit);
      rows.push_back(measure(*comm, op, bytes, warmup, runs));
    }
  }
  if (comm->rank() == 0) {
    print_table(rows, comm_name, n, warmup, runs);
    if (args.count("json")) write_json(args["json"].as<std::string>(), rows, comm_name, n, warmup, runs);
  }
  std::fflush(stdout);
  comm->barrier();
  if (const std::int64_t steps = args["train-steps"].as<std::int64_t>(); steps > 0) {
    std::vector<int> stages;
    for (const auto& text : split_list(args["stages"].as<std::string>())) {
      if (text.size() != 1 || text[0] < '0' || text[0] > '3')
        throw Error("bench comm: --stages: '" + text + "' is not a stage (0, 1, 2 or 3)");
      stages.push_back(text[0] - '0');
    }
    if (config.plugins.data.empty())
      throw Error("bench comm: --train-steps needs a --config that trains (plugins.data chosen)");
    bench_training_steps(config, comm_name, n, comm->rank(), steps, stages);
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace neox::app
