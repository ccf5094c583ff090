// SPDX-License-Identifier: Apache-2.0
// neox bench train-step --config FILE [--steps N] [--warmup N] [--set k=v]...
#include <algorithm>
#include <chrono>
#include <cstdio>
#include "cli_options.h"
#include <iostream>
#include <random>

#include "commands.h"
#include "neox/communicator.h"
#include "neox/error.h"
#include "neox/model.h"
#include "neox/optimizer.h"

namespace neox::app {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

int bench_train_step(const cxxopts::ParseResult& args) {
  if (!args.count("config")) throw Error("bench train-step: --config is required");
  Config config = config_from_args(args);
  const int steps = args["steps"].as<int>(), warmup = args["warmup"].as<int>();
  if (steps < 1 || warmup < 0) throw Error("bench train-step: --steps must be >= 1 and --warmup >= 0");

  auto registry = make_registry(config);
  auto backend = make_backend(*registry, config);
  auto comm = registry->make_comm(config.plugins.comm, config.plugins.options_for(config.plugins.comm));
  auto optimizer =
      registry->make_optimizer(config.plugins.optimizer, optimizer_options(config));
  GPTNeoX model(config.model, backend);
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
  for (int s = 0; s < warmup + steps; ++s) {
    auto t0 = Clock::now();
    model.arena().zero_grads(*backend);
    loss = model.forward_loss(ids, labels);
    backend->synchronize();
    double t_fwd = seconds_since(t0);
    auto t1 = Clock::now();
    model.backward();
    backend->synchronize();
    double t_bwd = seconds_since(t1);
    auto t2 = Clock::now();
    optimizer->step({static_cast<float>(config.optimizer.lr), s + 1, 1.0f});
    backend->synchronize();
    double t_opt = seconds_since(t2);
    if (s >= warmup) {
      fwd.push_back(t_fwd);
      bwd.push_back(t_bwd);
      opt.push_back(t_opt);
      total.push_back(seconds_since(t0));
    }
  }
  const double step_s = median(total);
  const double tokens_per_s = static_cast<double>(B * T) / step_s;
  const double flops = model.flops_per_token() * tokens_per_s;
  std::printf("config:      %s\n", config.path.c_str());
  std::printf("backend:     %s (%s)\n", backend->name().c_str(), device_name(backend->device()).c_str());
  std::printf("model:       %lld layers, hidden %lld, %lld heads, %lld parameters\n",
              static_cast<long long>(config.model.num_layers), static_cast<long long>(config.model.hidden_size),
              static_cast<long long>(config.model.num_attention_heads),
              static_cast<long long>(config.model.num_parameters()));
  std::printf("batch:       micro-batch %lld x seq %lld = %lld tokens/step\n", static_cast<long long>(B),
              static_cast<long long>(T), static_cast<long long>(B * T));
  std::printf("steps:       %d timed after %d warm-up (median)\n", steps, warmup);
  std::printf("forward:     %.2f ms\n", median(fwd) * 1e3);
  std::printf("backward:    %.2f ms\n", median(bwd) * 1e3);
  std::printf("optimizer:   %.2f ms\n", median(opt) * 1e3);
  std::printf("step:        %.2f ms\n", step_s * 1e3);
  std::printf("throughput:  %.0f tokens/s, %.2f GFLOP/s (6N + 12LHQT per token)\n", tokens_per_s, flops / 1e9);
  std::printf("final loss:  %.4f\n", loss);
  return 0;
}

}  // namespace

int cmd_bench(int argc, char** argv) {
  cxxopts::Options opts(argv[0], "Benchmarks that print figures. Usage: neox bench train-step --config FILE");
  opts.add_options()("what", "the benchmark: train-step", cxxopts::value<std::string>())(
      "steps", "timed steps", cxxopts::value<int>()->default_value("10"))(
      "warmup", "untimed steps first", cxxopts::value<int>()->default_value("2"))("h,help", "show this help");
  add_config_options(opts, "TOML config of the model and plugins", true);
  opts.parse_positional({"what"});
  auto args = opts.parse(argc, argv);
  if (args.count("help") || !args.count("what")) {
    std::cout << opts.help() << "\n";
    return args.count("help") ? 0 : 2;
  }
  const auto what = args["what"].as<std::string>();
  if (what == "train-step") return bench_train_step(args);
  throw Error("bench: unknown benchmark '" + what + "' (available: train-step)");
}

}  // namespace neox::app
