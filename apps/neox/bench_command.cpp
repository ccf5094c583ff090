// SPDX-License-Identifier: Apache-2.0
// neox bench train --config FILE [--steps N] [--warmup N] [--set k=v]...
//   (also `train-step`): one micro-batch's forward, backward and optimizer
//   step on random tokens, with the config's precision and activation
//   checkpointing; prints tokens/s, MFU (when training.peak_tflops is set)
//   and the backend's peak memory.
// neox bench op NAME --a PROVIDER --b PROVIDER ... (bench_op_command.cpp)
// neox bench op NAME --a PROVIDER --b PROVIDER [...]   (bench_op_command.cpp)
// neox bench comm [--sizes ...] [--ops ...]             (bench_comm_command.cpp)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>
#include "cli_options.h"

#include "commands.h"
#include "neox/communicator.h"
#include "neox/error.h"
#include "neox/model/gpt_neox.h"
#include "neox/optimizer.h"
#include "neox/train/loss_scaler.h"
#include "neox/train/op_profiler.h"

namespace neox::app {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

// The table of `bench train --profile`: time per op and shapes, its share
// of the profiled step, and its floor (bytes over bandwidth, flops over the
// matrix rate, whichever is larger) where the rates are known.
void print_profile(const OpProfiler& profiler, double profiled_s, double step_s, double mem_gbs, double gemm_tflops,
                   int rows) {
  const double ops_s = profiler.total_seconds();
  std::printf(
      "\nprofile:     one step with every op synchronised: %.2f ms (ops %.2f ms, the rest host work); "
      "the unprofiled step took %.2f ms\n",
      profiled_s * 1e3, ops_s * 1e3, step_s * 1e3);
  std::printf("floor:       the larger of bytes / %g GB/s and flops / %g TFLOP/s (0: not counted)\n", mem_gbs,
              gemm_tflops);
  std::printf("%9s %6s %6s %9s %9s %7s  %s\n", "ms", "%", "calls", "ms/call", "floor/call", "TFLOP/s", "op  shapes");
  double floor_total = 0;
  int shown = 0;
  std::map<std::string, double> by_op;
  for (const OpProfiler::Entry& e : profiler.entries()) {
    by_op[e.op] += e.seconds;
    const double per_call = e.seconds / static_cast<double>(e.calls);
    double floor = 0;
    if (mem_gbs > 0) floor = std::max(floor, e.bytes / (mem_gbs * 1e9));
    if (gemm_tflops > 0) floor = std::max(floor, e.flops / (gemm_tflops * 1e12));
    floor_total += floor * static_cast<double>(e.calls);
    if (shown++ >= rows) continue;
    char rate[32] = "";
    if (e.flops > 0) std::snprintf(rate, sizeof rate, "%.1f", e.flops / per_call / 1e12);
    std::printf("%9.3f %6.1f %6lld %9.4f %9.4f %7s  %s  %s\n", e.seconds * 1e3, 100.0 * e.seconds / ops_s,
                static_cast<long long>(e.calls), per_call * 1e3, floor * 1e3, rate, e.op.c_str(), e.shapes.c_str());
  }
  if (shown > rows) std::printf("          ... %d more rows\n", shown - rows);
  std::printf("by op:      ");
  std::vector<std::pair<double, std::string>> ops;
  for (const auto& [op, t] : by_op) ops.emplace_back(t, op);
  std::sort(ops.rbegin(), ops.rend());
  for (const auto& [t, op] : ops) std::printf(" %s %.2f ms (%.0f%%);", op.c_str(), t * 1e3, 100.0 * t / ops_s);
  std::printf("\n");
  if (mem_gbs > 0 && gemm_tflops > 0)
    std::printf("floor sum:   %.2f ms of ops (%.0f%% of the ops' time)\n", floor_total * 1e3,
                100.0 * floor_total / ops_s);
}

int bench_train_step(const cxxopts::ParseResult& args) {
  if (!args.count("config")) throw Error("bench train: --config is required");
  Config config = config_from_args(args);
  const int steps = args["steps"].as<int>(), warmup = args["warmup"].as<int>();
  if (steps < 1 || warmup < 0) throw Error("bench train: --steps must be >= 1 and --warmup >= 0");

  auto registry = make_registry(config);
  auto backend = make_backend(*registry, config);
  auto comm = registry->make_comm(config.plugins.comm, config.plugins.options_for(config.plugins.comm));
  // One process, as `neox train` on one rank: a zero_stage has nothing to
  // partition there, and the step is the unpartitioned optimizer's.
  const std::string optimizer_name =
      config.plugins.optimizer == config.plugins.zero_optimizer ? PluginsConfig().optimizer : config.plugins.optimizer;
  OptimizerContext context = optimizer_context(config);
  context.zero_stage = 0;
  auto optimizer = registry->make_optimizer(optimizer_name, config.plugins.options_for(optimizer_name), context);
  const ComputeOptions compute = compute_options(config.training);
  GPTNeoX model(config.model, backend, compute);
  // fp16: the initial loss scale (timing only: no overflow handling here).
  const double loss_scale =
      compute.dtype == DType::f16
          ? LossScaler({config.training.loss_scale, config.training.initial_scale_power, 1, 1, 1.0}).scale()
          : 1.0;
  model.initialize(config.training.seed);
  optimizer->init(*backend, *comm, model.arena().params(), model.arena().grads(),
                  model.arena().groups(static_cast<float>(config.optimizer.weight_decay)));

  const std::int64_t B = config.training.train_micro_batch_size_per_gpu, T = config.model.seq_length;
  Tensor ids = Tensor::empty(nullptr, {B, T}, DType::i64);
  Tensor labels = Tensor::empty(nullptr, {B, T}, DType::i64);
  std::mt19937_64 rng(config.training.seed);
  std::uniform_int_distribution<std::int64_t> token(0, config.model.vocab_size - 1);
  for (std::int64_t i = 0; i < B * T; ++i) {
    ids.ptr<std::int64_t>()[i] = token(rng);
    labels.ptr<std::int64_t>()[i] = token(rng);
  }

  std::vector<double> fwd, bwd, opt, total;
  double loss = 0.0;
  // One step (optimizer step number `n`); the phases' seconds, each ended by
  // a synchronisation so that it holds its device work.
  struct PhaseTimes {
    double fwd = 0, bwd = 0, opt = 0;
  };
  auto train_step = [&](std::int64_t n) {
    PhaseTimes p;
    auto t = Clock::now();
    model.arena().zero_grads(*backend);
    loss = model.forward_loss(ids, labels);
    backend->synchronize();
    p.fwd = seconds_since(t);
    t = Clock::now();
    model.backward(static_cast<float>(loss_scale));
    backend->synchronize();
    p.bwd = seconds_since(t);
    t = Clock::now();
    optimizer->step({static_cast<float>(config.optimizer.lr), n, static_cast<float>(1.0 / loss_scale)});
    model.arena().mark_params_changed();
    backend->synchronize();
    p.opt = seconds_since(t);
    return p;
  };
  for (int s = 0; s < warmup + steps; ++s) {
    const auto t0 = Clock::now();
    const PhaseTimes p = train_step(s + 1);
    if (s + 1 == warmup) backend->reset_peak_memory();  // peak of the timed steps
    if (s >= warmup) {
      fwd.push_back(p.fwd);
      bwd.push_back(p.bwd);
      opt.push_back(p.opt);
      total.push_back(seconds_since(t0));
    }
  }
  const double step_s = median(total);
  const double tokens_per_s = static_cast<double>(B * T) / step_s;
  const double flops = model.flops_per_token() * tokens_per_s;
  std::printf("config:      %s\n", config.path.c_str());
  std::printf("backend:     %s (%s)\n", backend->name().c_str(), device_name(backend->device()).c_str());
  if (config.training.zero_stage > 0)
    std::printf("optimizer:   %s (training.zero_stage %lld: one process has nothing to partition)\n",
                optimizer_name.c_str(), static_cast<long long>(config.training.zero_stage));
  std::printf("model:       %lld layers, hidden %lld, %lld heads, %lld parameters\n",
              static_cast<long long>(config.model.num_layers), static_cast<long long>(config.model.hidden_size),
              static_cast<long long>(config.model.num_attention_heads),
              static_cast<long long>(config.model.num_parameters()));
  std::printf("batch:       micro-batch %lld x seq %lld = %lld tokens/step\n", static_cast<long long>(B),
              static_cast<long long>(T), static_cast<long long>(B * T));
  std::printf(
      "precision:   %s%s\n", config.training.precision.c_str(),
      compute.checkpoint_activations
          ? (", activation checkpointing every " + std::to_string(compute.checkpoint_num_layers) + " layer(s)").c_str()
          : "");
  std::printf("steps:       %d timed after %d warm-up (median)\n", steps, warmup);
  std::printf("forward:     %.2f ms\n", median(fwd) * 1e3);
  std::printf("backward:    %.2f ms\n", median(bwd) * 1e3);
  std::printf("optimizer:   %.2f ms\n", median(opt) * 1e3);
  std::printf("step:        %.2f ms\n", step_s * 1e3);
  std::printf("throughput:  %.0f tokens/s, %.2f GFLOP/s (6N + 12LHQT per token)\n", tokens_per_s, flops / 1e9);
  if (config.training.peak_tflops > 0)
    std::printf("MFU:         %.1f%% of %g TFLOP/s\n", 100.0 * flops / (config.training.peak_tflops * 1e12),
                config.training.peak_tflops);
  const Backend::MemoryStats mem = backend->memory_stats();
  if (mem.peak_in_use > 0)
    std::printf(
        "memory:      peak %.2f GiB in use (%.2f GiB reserved); activations %.2f GiB, parameters and "
        "gradients %.2f GiB, optimizer state %.2f GiB\n",
        static_cast<double>(mem.peak_in_use) / (1 << 30), static_cast<double>(mem.reserved) / (1 << 30),
        static_cast<double>(model.activation_bytes()) / (1 << 30),
        static_cast<double>(model.arena().bytes()) / (1 << 30),
        static_cast<double>(optimizer->state_bytes()) / (1 << 30));
  std::printf("final loss:  %.4f\n", loss);
  if (args.count("profile")) {
    OpProfiler profiler(*backend);
    auto t0 = Clock::now();
    train_step(warmup + steps + 1);
    print_profile(profiler, seconds_since(t0), step_s, args["mem-gbs"].as<double>(),
                  args["gemm-tflops"].as<double>() > 0 ? args["gemm-tflops"].as<double>() : config.training.peak_tflops,
                  args["profile-rows"].as<int>());
  }
  return 0;
}

}  // namespace

// bench_op_command.cpp
int bench_op(const cxxopts::ParseResult& args);
// bench_comm_command.cpp (its own options; argv[0] is "comm")
int bench_comm(int argc, char** argv);

int cmd_bench(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "comm") return bench_comm(argc - 1, argv + 1);
  cxxopts::Options opts(
      argv[0],
      "Benchmarks that print figures. Usage:\n"
      "  neox bench train --config FILE [--steps N] [--warmup N] [--profile [--mem-gbs GB/s] [--gemm-tflops T]]\n"
      "      (alias: train-step)\n"
      "  neox bench op NAME --a PROVIDER --b PROVIDER [--dtype f32|bf16|f16] [--size S]\n"
      "      [--runs N] [--warmup N] [--l2-mb MB] [--config FILE]\n"
      "  neox bench comm [--comm NAME] [--sizes 4K,1M] [--ops all_reduce,...] [--runs N]\n"
      "      [--json FILE]   (under mpirun; 'neox bench comm --help')\n"
      "  (a PROVIDER is a backend plugin, e.g. cpu or cuda, or a kernels plugin)");
  opts.add_options()("what", "the benchmark: train (or train-step) or op", cxxopts::value<std::string>())(
      "name", "op: the kernel op (a name of neox/kernels.h)", cxxopts::value<std::string>())(
      "steps", "train: timed steps", cxxopts::value<int>()->default_value("10"))(
      "warmup", "untimed steps (train) or calls (op) first", cxxopts::value<int>()->default_value("2"))(
      "a", "op: the first provider (backend or kernels plugin): --a NAME", cxxopts::value<std::string>())(
      "b", "op: the second provider: --b NAME", cxxopts::value<std::string>())(
      "dtype", "op: activation dtype, f32, bf16 or f16", cxxopts::value<std::string>()->default_value("f32"))(
      "size", "op: scale of the op's shape (1 = the realistic shape; 0.01 for a quick CPU run)",
      cxxopts::value<double>()->default_value("1"))("runs", "op: timed calls",
                                                    cxxopts::value<int>()->default_value("10"))(
      "l2-mb", "op: L2 cache size in MiB; the arguments are copied until the copies exceed it",
      cxxopts::value<double>()->default_value("64"))(
      "profile",
      "train: after the timed steps, one more step with every op timed on its own (a table by op and shape)")(
      "mem-gbs", "train --profile: memory bandwidth in GB/s for each op's floor (bytes moved / bandwidth)",
      cxxopts::value<double>()->default_value("0"))(
      "gemm-tflops", "train --profile: matrix rate in TFLOP/s for each op's floor (default training.peak_tflops)",
      cxxopts::value<double>()->default_value("0"))("profile-rows", "train --profile: rows of the table",
                                                    cxxopts::value<int>()->default_value("40"))("h,help",
                                                                                                "show this help");
  add_config_options(opts, "TOML config of the model and plugins (op: optional, for search paths and options)", true);
  opts.parse_positional({"what", "name"});
  // cxxopts reads a one-letter option only in its short form (-a X): --a X
  // and --a=X, the documented spelling, are rewritten to it.
  std::vector<std::string> words;
  for (int i = 0; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i > 0 && (arg == "--a" || arg == "--b")) {
      words.push_back(arg.substr(1));
    } else if (i > 0 && (arg.rfind("--a=", 0) == 0 || arg.rfind("--b=", 0) == 0)) {
      words.push_back(arg.substr(1, 2));
      words.push_back(arg.substr(4));
    } else {
      words.push_back(arg);
    }
  }
  std::vector<char*> argv2;
  for (auto& w : words) argv2.push_back(w.data());
  auto args = opts.parse(static_cast<int>(argv2.size()), argv2.data());
  if (args.count("help") || !args.count("what")) {
    std::cout << opts.help() << "\n";
    return args.count("help") ? 0 : 2;
  }
  const auto what = args["what"].as<std::string>();
  if (what == "train" || what == "train-step") return bench_train_step(args);
  if (what == "op") return bench_op(args);
  throw Error("bench: unknown benchmark '" + what + "' (available: train, train-step, op, comm)");
}

}  // namespace neox::app
