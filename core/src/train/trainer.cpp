// SPDX-License-Identifier: Apache-2.0
#include "neox/train/trainer.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <sstream>
#include <vector>

#include "gradient_average.h"
#include "neox/backend.h"
#include "neox/communicator.h"
#include "neox/data_source.h"
#include "neox/error.h"
#include "neox/io/hf.h"
#include "neox/model/gpt_neox.h"
#include "neox/optimizer.h"
#include "neox/registry.h"
#include "neox/text/tokenizers.h"
#include "neox/train/checkpoint.h"
#include "neox/train/loss_scaler.h"
#include "run_log.h"

namespace neox {

namespace {

namespace fs = std::filesystem;

std::atomic<bool> g_stop{false};
using Clock = std::chrono::steady_clock;

double seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// A metrics.jsonl record's numbers as TensorBoard scalars: (key, tag) pairs,
// the tags GPT-NeoX's own TensorBoard logging uses where it has one. Taken
// from the record itself so that both files hold the same values; keys the
// record lacks (mfu without peak_tflops, loss_scale outside fp16) are left out.
void log_scalars(RunLog& log, const nlohmann::json& rec,
                 std::initializer_list<std::pair<const char*, std::string>> tags) {
  std::vector<std::pair<std::string, double>> values;
  for (const auto& [key, tag] : tags)
    if (auto it = rec.find(key); it != rec.end()) values.emplace_back(tag, it->get<double>());
  log.scalars(rec.at("step").get<std::int64_t>(), values);
}

// The architecture keys of [model] that an hf:DIR checkpoint must agree with.
void check_same_architecture(const ModelConfig& cfg, const ModelConfig& hf, const std::string& dir) {
  auto fail = [&](const std::string& key, const std::string& ours, const std::string& theirs) {
    throw Error("training.load = hf:" + dir + ": model." + key + " is " + ours + " in the config but " + theirs +
                " in " + dir + "/config.json");
  };
  auto cmp = [&](const char* key, auto a, auto b) {
    if (a != b) {
      std::ostringstream x, y;
      x << a;
      y << b;
      fail(key, x.str(), y.str());
    }
  };
  cmp("num_layers", cfg.num_layers, hf.num_layers);
  cmp("hidden_size", cfg.hidden_size, hf.hidden_size);
  cmp("num_attention_heads", cfg.num_attention_heads, hf.num_attention_heads);
  cmp("intermediate_size (effective)", cfg.ffn_size(), hf.ffn_size());
  cmp("vocab_size (padded)", cfg.padded_vocab_size(), hf.padded_vocab_size());
  cmp("pos_emb", cfg.pos_emb, hf.pos_emb);
  cmp("rotary dimensions", cfg.rotary_dims(), hf.rotary_dims());
  cmp("rotary_emb_base", cfg.rotary_emb_base, hf.rotary_emb_base);
  cmp("gpt_j_residual", cfg.gpt_j_residual, hf.gpt_j_residual);
  cmp("no_weight_tying", cfg.no_weight_tying, hf.no_weight_tying);
  cmp("layernorm_epsilon", cfg.layernorm_epsilon, hf.layernorm_epsilon);
}

class Trainer {
 public:
  explicit Trainer(const Config& config)
      : cfg_(config), tc_(config.training), schedule_(config.optimizer, tc_.train_iters) {}

  TrainResult run();

 private:
  // setup(), in order: the plugins and the run log, the model, its
  // weights, the gradient averaging, the data; then the summary lines.
  void setup();
  void make_plugins();
  void claim_save_directory();
  void make_model();
  void check_tokenizer();
  // Weights from hf:DIR, a checkpoint or the init methods; when resuming,
  // the optimizer state and the trainer's own state too. Returns the
  // checkpoint resumed from ("" if none).
  std::string load_weights(CheckpointState& resumed);
  std::string resume(CheckpointState& resumed);
  // Whether every rank's `ok` is true; collective.
  bool all_ok(bool ok);
  void set_up_gradient_averaging();
  void make_data(const CheckpointState* resumed);
  void log_setup();
  std::int64_t global_batch() const;
  double train_step();
  double evaluate(Split split, std::int64_t batches);
  void save();
  void log_step(std::int64_t iteration, double loss, double lr, double grad_norm);
  void log_memory(bool at_end = false);

  Config cfg_;
  const TrainingConfig& tc_;
  LearningRateSchedule schedule_;
  std::unique_ptr<PluginRegistry> registry_;
  std::shared_ptr<Backend> backend_;
  std::shared_ptr<Communicator> comm_;
  std::shared_ptr<Optimizer> optimizer_;
  std::shared_ptr<DataSource> data_;
  std::unique_ptr<GPTNeoX> model_;
  std::unique_ptr<LossScaler> scaler_;          // fp16 only
  std::int64_t skipped_steps_ = 0;              // steps skipped for inf/NaN gradients
  std::optional<SaveDirectoryLock> save_lock_;  // rank 0, while training.save is set
  // Where the current global batch size began (a checkpoint's facts: the
  // train position must be batch_start_position_ + (iteration -
  // batch_start_iteration_) * global batch).
  std::int64_t batch_start_iteration_ = 0;
  std::int64_t batch_start_position_ = 0;
  bool position_facts_ = true;  // false: the data plugin counts otherwise (warned once)
  std::string resumed_from_;    // the checkpoint this run resumed from, for messages
  std::unique_ptr<RunLog> log_;
  std::unique_ptr<OverlappedGradientAverage> overlapped_average_;  // DP with zero_overlap_comm
  std::mt19937_64 rng_;
  std::int64_t iteration_ = 0;
  std::int64_t tokens_per_step_ = 0;
  TrainResult result_;
  // Since the last log line.
  double interval_loss_ = 0.0;
  std::int64_t interval_steps_ = 0;
  Clock::time_point interval_start_, run_start_;
  // Time in training steps, and the part of it in the model and optimizer
  // (zero grads, forward, backward, optimizer step): the rest is the
  // trainer's own overhead (data, clipping, logging).
  double step_seconds_total_ = 0.0;
  double compute_seconds_ = 0.0;
  std::int64_t step_comm_bytes_ = 0;  // sent inside train_step, this run
  std::int64_t steps_run_ = 0;
  std::int64_t last_step_comm_bytes_ = 0;
  nlohmann::json memory_;  // memory.json
};

// Refuses settings this version cannot honour, naming the key.
void check_supported(const Config& c) {
  const std::string where = c.path.empty() ? std::string("config") : c.path;
  const TrainingConfig& t = c.training;
  if (t.model_parallel_size > 1)
    throw Error(where + ": training.model_parallel_size = " + std::to_string(t.model_parallel_size) +
                ": tensor parallelism is not implemented; set it to 1");
  if (t.pipe_parallel_size > 1)
    throw Error(where + ": training.pipe_parallel_size = " + std::to_string(t.pipe_parallel_size) +
                ": pipeline parallelism is not implemented; set it to 1");
  (void)optimizer_plugin(c);  // refuses a zero_stage the optimizer cannot honour
}

// Every rank must train with the same settings: compares a hash of each
// rank's whole config (config_to_toml, defaults and --set overrides
// included) and refuses to start, on every rank, naming the ranks that
// differ from rank 0.
void check_same_config_on_all_ranks(Communicator& comm, const Config& cfg) {
  if (comm.size() <= 1) return;
  std::uint64_t h = 14695981039346656037ull;  // FNV-1a
  for (char c : config_to_toml(cfg)) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  Tensor mine = Tensor::zeros_host({1}, DType::i64);
  mine.ptr<std::int64_t>()[0] = static_cast<std::int64_t>(h);
  Tensor all = Tensor::zeros_host({comm.size()}, DType::i64);
  comm.all_gather(mine, all);
  std::string differ;
  for (int r = 1; r < comm.size(); ++r)
    if (all.ptr<std::int64_t>()[r] != all.ptr<std::int64_t>()[0])
      differ += (differ.empty() ? "" : ", ") + std::to_string(r);
  if (!differ.empty())
    throw CollectiveError(
        (cfg.path.empty() ? std::string("config") : cfg.path) + ": the config differs between ranks: rank" +
        (differ.find(',') != std::string::npos ? "s " : " ") + differ + " and rank 0 (rank " +
        std::to_string(comm.rank()) + " here); every rank must get the same config file and --set overrides");
}

// The [tokenizer] the config names must load and fit the embedding: a
// tokenizer with more tokens than the model has rows would produce ids the
// model cannot embed. Fewer is allowed (GPT-NeoX pads the vocabulary).
void Trainer::check_tokenizer() {
  auto tok = make_tokenizer(cfg_.tokenizer, cfg_.path, registry_.get(), cfg_.plugins.options_for(cfg_.tokenizer.type));
  if (!tok) return;
  const std::string where = cfg_.path.empty() ? std::string("config") : cfg_.path;
  const std::int64_t V = tok->vocab_size(), rows = cfg_.model.padded_vocab_size();
  if (V > rows)
    throw Error(where + ": tokenizer: the " + cfg_.tokenizer.type + " tokenizer has " + std::to_string(V) +
                " tokens but the model embeds only " + std::to_string(rows) + " (model.vocab_size " +
                std::to_string(cfg_.model.vocab_size) + ", padded to a multiple of " +
                std::to_string(cfg_.model.make_vocab_size_divisible_by) +
                "): set model.vocab_size = " + std::to_string(V));
  log_->log().info("tokenizer: {} with {} tokens{}", cfg_.tokenizer.type, V,
                   cfg_.tokenizer.vocab_file.empty() ? std::string() : " from " + cfg_.tokenizer.vocab_file);
  if (V != cfg_.model.vocab_size)
    log_->log().warn("tokenizer: {} tokens, but model.vocab_size is {} (GPT-NeoX sets it from the tokenizer)", V,
                     cfg_.model.vocab_size);
}

std::int64_t Trainer::global_batch() const {
  return tc_.train_micro_batch_size_per_gpu * tc_.gradient_accumulation_steps * comm_->size();
}

void Trainer::setup() {
  check_supported(cfg_);
  make_plugins();
  make_model();
  // The gradient averaging's hooks before the weights: loading them (again,
  // when an older checkpoint must be used) works the same with any hooks.
  set_up_gradient_averaging();
  CheckpointState resumed;
  const std::string resume_path = load_weights(resumed);
  make_data(resume_path.empty() ? nullptr : &resumed);
  log_setup();
}

bool Trainer::all_ok(bool ok) {
  if (comm_->size() <= 1) return ok;
  Tensor flag = Tensor::zeros_host({1}, DType::i64);
  flag.ptr<std::int64_t>()[0] = ok ? 0 : 1;
  comm_->all_reduce(flag, ReduceOp::max);
  return flag.ptr<std::int64_t>()[0] == 0;
}

namespace {

fs::path comparable(const std::string& path) {
  fs::path p = fs::path(path).lexically_normal();
  if (!p.has_filename() && p.has_parent_path()) p = p.parent_path();
  std::error_code ec;
  fs::path c = fs::weakly_canonical(p, ec);
  return ec ? fs::absolute(p, ec).lexically_normal() : c;
}

bool same_directory(const std::string& a, const std::string& b) { return comparable(a) == comparable(b); }

// training.load names the save directory or one of its checkpoints: the run
// continues (or, with finetune, knowingly restarts) in its own directory.
bool loads_from_save(const TrainingConfig& t) {
  if (t.load.empty() || t.save.empty() || t.load.rfind("hf:", 0) == 0) return false;
  const fs::path load = comparable(t.load), save = comparable(t.save);
  return load == save || load.parent_path() == save;
}

}  // namespace

// training.save belongs to this run: rank 0 locks it for the whole run (the
// other ranks write only into rank 0's temporary directory, inside the
// collective save), and a run that does not resume from it refuses to mix
// its checkpoints into those another run left there. Every rank agrees
// before anything is written.
void Trainer::claim_save_directory() {
  if (tc_.save.empty()) return;
  std::string failure;
  if (comm_->rank() == 0) {
    try {
      save_lock_.emplace(tc_.save);
      const std::string newest = loads_from_save(tc_) ? std::string() : newest_checkpoint(tc_.save);
      if (!newest.empty()) {
        const std::string where = cfg_.path.empty() ? std::string("config") : cfg_.path;
        throw Error(where + ": training.save = " + tc_.save + " already holds the checkpoints of a run (newest: " +
                    newest + "), and this run does not resume from it (training.load " +
                    (tc_.load.empty() ? std::string("is empty") : "= " + tc_.load) +
                    "): its checkpoints would be mixed with that run's and move its 'latest'. To continue that "
                    "run, set training.load = \"" +
                    tc_.save + "\" (--set training.load=" + tc_.save +
                    "); to start a new one, choose another training.save, or remove " + tc_.save);
      }
    } catch (const Error& e) {
      failure = e.what();
      save_lock_.reset();
    }
  }
  if (!all_ok(failure.empty()))
    throw CollectiveError(failure.empty() ? tc_.save + ": rank 0 cannot save into this directory (see its error)"
                                          : failure);
}

// The communicator first (every rank must agree on the config before
// anything is written), then the run directory, the backend and the
// optimizer.
void Trainer::make_plugins() {
  registry_ = std::make_unique<PluginRegistry>(cfg_.plugins.search_paths);
  comm_ = registry_->make_comm(cfg_.plugins.comm, cfg_.plugins.options_for(cfg_.plugins.comm));
  check_same_config_on_all_ranks(*comm_, cfg_);
  claim_save_directory();
  log_ = std::make_unique<RunLog>(tc_.log_dir, tc_.run_name, comm_->rank(), comm_->size(), tc_.tensorboard);
  result_.run_dir = log_->dir();
  log_->write_config(config_to_toml(cfg_));
  backend_ = registry_->make_backend(cfg_.plugins.backend, cfg_.plugins.kernels, cfg_.plugins.options);
  // One rank has nothing to partition: a zero_stage of a GPT-NeoX config
  // then trains with the plain optimizer (which, unlike the host-buffer
  // `local` communicator, also works on a GPU), unless the partitioning one
  // was chosen by name.
  std::string optimizer = optimizer_plugin(cfg_);
  OptimizerContext context = optimizer_context(cfg_);
  if (optimizer != cfg_.plugins.optimizer && comm_->size() == 1) {
    optimizer = cfg_.plugins.optimizer;
    context.zero_stage = 0;
    log_->log().info("training.zero_stage {} on one rank: nothing to partition, optimizer {}", tc_.zero_stage,
                     optimizer);
  }
  optimizer_ = registry_->make_optimizer(optimizer, cfg_.plugins.options_for(optimizer), context);
}

// The model, its arena already partitioned as the optimizer keeps it (what
// the optimizer partitions is never allocated whole: under ZeRO-3 no rank
// holds the whole model, not even while initialising, loading or saving);
// the optimizer takes the arena and the model calls its hooks.
void Trainer::make_model() {
  const ComputeOptions compute = compute_options(tc_);
  model_ = std::make_unique<GPTNeoX>(cfg_.model, backend_, compute, optimizer_->arena_partitioning());
  check_tokenizer();
  if (compute.dtype == DType::f16)
    scaler_ = std::make_unique<LossScaler>(LossScalerConfig{tc_.loss_scale, tc_.initial_scale_power,
                                                            tc_.loss_scale_window, tc_.hysteresis, tc_.min_loss_scale});
  rng_.seed(tc_.seed);
  tokens_per_step_ = global_batch() * cfg_.model.seq_length;
  // The optimizer takes the arena first; its hooks then receive the weights
  // unit by unit (ZeRO-3 keeps only each rank's part of each).
  optimizer_->init_arena(*backend_, *comm_, model_->arena(), static_cast<float>(cfg_.optimizer.weight_decay));
  comm_->set_stream(backend_->native_stream());
  model_->set_parameter_hooks(optimizer_->hooks());
}

std::string Trainer::load_weights(CheckpointState& resumed) {
  if (tc_.load.rfind("hf:", 0) == 0) {
    const std::string dir = tc_.load.substr(3);
    check_same_architecture(cfg_.model, read_hf_config(dir), dir);
    load_hf_weights(*model_, dir);
    log_->log().info("weights from Hugging Face directory {}", dir);
    return {};
  }
  if (tc_.load.empty()) {
    model_->initialize(tc_.seed);
    return {};
  }
  // GPT-NeoX's way to run in pieces: load = save in every launch. Until the
  // first checkpoint there is nothing to resume.
  if (!tc_.save.empty() && same_directory(tc_.load, tc_.save) && newest_checkpoint(tc_.load).empty()) {
    log_->log().info("training.load = {}: no checkpoint there yet; starting at step 0", tc_.load);
    model_->initialize(tc_.seed);
    return {};
  }
  if (tc_.finetune) {
    const std::string path = resolve_checkpoint(tc_.load);
    load_checkpoint(path, *model_, nullptr);
    log_->log().info("fine-tuning weights from {}", path);
    return {};
  }
  return resume(resumed);
}

// Weights, optimizer state and the trainer's state from tc_.load. A
// checkpoint whose optimizer state the optimizer refuses (on any rank) is
// treated like a corrupted one: the next older complete checkpoint of the
// save directory is used, with a warning.
std::string Trainer::resume(CheckpointState& resumed) {
  std::map<std::string, std::string> refused;
  std::string path;
  for (;;) {
    try {
      path = resolve_checkpoint(tc_.load, refused);
    } catch (const Error& e) {
      if (refused.empty()) throw;
      throw CollectiveError(e.what());  // every rank refused the same checkpoints
    }
    std::string failure;
    try {
      resumed = load_checkpoint(path, *model_, optimizer_.get());
    } catch (const CorruptCheckpoint& e) {
      failure = e.what();
    }
    if (all_ok(failure.empty())) break;
    if (failure.empty()) failure = path + ": refused on another rank (see its log)";
    log_->log().warn("checkpoint {} is not usable ({}); trying the previous complete checkpoint", path, failure);
    refused[path] = failure;
  }
  log_->log().info("resuming from {}", path);
  resumed_from_ = path;
  iteration_ = resumed.iteration;
  if (auto it = resumed.trainer_values.find("skipped_steps"); it != resumed.trainer_values.end())
    skipped_steps_ = static_cast<std::int64_t>(it->second);
  // A changed global batch is allowed (a new phase of training), but then
  // the run is not the continuation of the saved one: resharding onto
  // another number of ranks must keep it.
  const auto& values = resumed.trainer_values;
  const auto saved_batch = values.find("global_batch_size");
  if (saved_batch != values.end() && static_cast<std::int64_t>(saved_batch->second) != global_batch())
    log_->log().warn(
        "resuming with a global batch of {} sequences ({} x {} micro-batches x {} ranks), but {} "
        "was trained with {}: the data order and the results differ from an uninterrupted run "
        "(keep train_micro_batch_size_per_gpu x gradient_accumulation_steps x ranks the same)",
        global_batch(), tc_.train_micro_batch_size_per_gpu, tc_.gradient_accumulation_steps, comm_->size(), path,
        static_cast<std::int64_t>(saved_batch->second));
  const auto start = values.find("batch_start_iteration"), start_position = values.find("batch_start_train_position");
  if (saved_batch != values.end() && static_cast<std::int64_t>(saved_batch->second) == global_batch() &&
      start != values.end() && start_position != values.end()) {
    batch_start_iteration_ = static_cast<std::int64_t>(start->second);
    batch_start_position_ = static_cast<std::int64_t>(start_position->second);
  } else {
    batch_start_iteration_ = iteration_;
    auto train = resumed.data_positions.find(split_name(Split::train));
    batch_start_position_ = train != resumed.data_positions.end() ? train->second : 0;
  }
  if (scaler_) scaler_->load_state(resumed.trainer_values);
  if (!resumed.rng_state.empty()) {
    std::istringstream in(resumed.rng_state);
    in >> rng_;
  }
  return path;
}

// zero_overlap_comm: ZeRO overlaps inside its hooks; plain data parallelism
// through OverlappedGradientAverage.
void Trainer::set_up_gradient_averaging() {
  if (!tc_.zero_overlap_comm || comm_->size() <= 1) return;
  if (!comm_->overlaps()) {
    log_->log().warn(
        "training.zero_overlap_comm: comm '{}' cannot overlap; gradients are reduced after backward "
        "(ZeRO: after each layer's)",
        cfg_.plugins.comm);
  } else if (optimizer_->hooks()) {
    log_->log().info("ZeRO: each layer's gradients are reduce-scattered during backward (zero_overlap_comm)");
  } else if (optimizer_->reduces_gradients()) {
    log_->log().info(
        "ZeRO: zero_overlap_comm has nothing to overlap at stage 1 (gradients reduced after the "
        "last micro-batch)");
  } else {
    overlapped_average_ =
        std::make_unique<OverlappedGradientAverage>(*comm_, model_->arena(), tc_.zero_reduce_bucket_size);
    model_->set_parameter_hooks(overlapped_average_.get());
    log_->log().info(
        "data parallel: gradients averaged during backward, {} elements per all-reduce at most "
        "(zero_overlap_comm)",
        tc_.zero_reduce_bucket_size);
  }
}

// The data source, with the samples each split must supply as GPT-NeoX
// computes them, at the positions a resumed run had reached.
void Trainer::make_data(const CheckpointState* resumed) {
  if (cfg_.plugins.data.empty())
    throw Error((cfg_.path.empty() ? std::string("config") : cfg_.path) +
                ": plugins.data: no data source chosen (e.g. \"mmap\" with [plugins.options.mmap] data_path)");
  DataContext ctx;
  ctx.seq_length = cfg_.model.seq_length;
  ctx.micro_batch_size = tc_.train_micro_batch_size_per_gpu;
  ctx.vocab_size = cfg_.model.vocab_size;
  ctx.seed = tc_.seed;
  ctx.train_samples = tc_.train_iters * global_batch();
  ctx.valid_samples = (tc_.train_iters / tc_.eval_interval + 1) * tc_.eval_iters * global_batch();
  ctx.test_samples = tc_.eval_iters * global_batch();
  ctx.dp_rank = comm_->rank();
  ctx.dp_size = comm_->size();
  data_ = registry_->make_data(cfg_.plugins.data, cfg_.plugins.options_for(cfg_.plugins.data), ctx);
  if (resumed)
    for (Split s : {Split::train, Split::valid, Split::test}) {
      auto it = resumed->data_positions.find(split_name(s));
      if (it != resumed->data_positions.end()) data_->seek(s, it->second);
    }
}

void Trainer::log_setup() {
  const ModelConfig& m = cfg_.model;
  log_->log().info("model: {} layers, hidden {}, {} heads, seq {}, vocab {} (padded {}), {:.2f}M parameters",
                   m.num_layers, m.hidden_size, m.num_attention_heads, m.seq_length, m.vocab_size,
                   m.padded_vocab_size(), static_cast<double>(m.num_parameters()) / 1e6);
  log_->log().info("plugins: backend {} ({}), comm {} ({} rank{}), optimizer {}, data {}", backend_->name(),
                   device_name(backend_->device()), cfg_.plugins.comm, comm_->size(), comm_->size() > 1 ? "s" : "",
                   optimizer_->name(), cfg_.plugins.data);
  log_->log().info(
      "precision: {}{}{}", tc_.precision,
      scaler_ ? fmt::format(", loss scale {} ({})", scaler_->scale(), scaler_->dynamic() ? "dynamic" : "static")
              : std::string(),
      tc_.checkpoint_activations
          ? fmt::format(", activation checkpointing every {} layer(s)", tc_.checkpoint_num_layers)
          : std::string());
  log_->log().info("batch: {} x {} micro-batches x {} ranks = {} sequences, {} tokens per step; {} steps",
                   tc_.train_micro_batch_size_per_gpu, tc_.gradient_accumulation_steps, comm_->size(), global_batch(),
                   tokens_per_step_, tc_.train_iters);
  log_memory();
  log_->log().info("run directory: {}", log_->dir());
  log_->start_session(iteration_ + 1);
}

double Trainer::train_step() {
  const auto step_start = Clock::now();
  const std::int64_t comm_bytes_before = comm_->stats().total_bytes();
  Kernels& k = backend_->kernels;
  ParameterArena& arena = model_->arena();
  auto t = Clock::now();
  arena.zero_grads(*backend_);
  optimizer_->zero_grad();
  double compute = seconds(t, Clock::now());
  const std::int64_t accum = tc_.gradient_accumulation_steps;
  // fp16: the loss (so every gradient) is multiplied by the loss scale, and
  // the optimizer divides it out again through grad_scale.
  const double loss_scale = scaler_ ? scaler_->scale() : 1.0;
  double loss_sum = 0.0;
  for (std::int64_t micro = 0; micro < accum; ++micro) {
    Batch batch = data_->next(Split::train);
    t = Clock::now();
    loss_sum += model_->forward_loss(batch.input_ids, batch.labels, batch.loss_mask);
    if (overlapped_average_ && micro + 1 == accum) overlapped_average_->arm();
    model_->backward(static_cast<float>(loss_scale / static_cast<double>(accum)));
    compute += seconds(t, Clock::now());
  }
  // Gradients averaged over the ranks: by the optimizer (ZeRO, partly during
  // backward) or here, in buckets.
  t = Clock::now();
  double sum_squares = 0.0;
  if (optimizer_->reduces_gradients()) {
    optimizer_->reduce_gradients();
    sum_squares = optimizer_->gradient_sum_squares();
  } else {
    Tensor grads = arena.grads();
    if (overlapped_average_)
      overlapped_average_->finish();
    else if (comm_->size() > 1)
      all_reduce_in_buckets(*comm_, grads, tc_.zero_reduce_bucket_size);
    sum_squares = k.sum_squares(grads);
  }
  compute += seconds(t, Clock::now());
  double loss = loss_sum / static_cast<double>(accum);
  if (comm_->size() > 1) {
    Tensor l = Tensor::empty(nullptr, {1}, DType::f64);
    l.ptr<double>()[0] = loss;
    comm_->all_reduce(l, ReduceOp::avg);
    loss = l.ptr<double>()[0];
  }
  // Global-norm clipping as torch.nn.utils.clip_grad_norm_, on the unscaled
  // gradients. A non-finite norm means an inf or NaN gradient: with fp16
  // the step is skipped and the scale lowered.
  const double grad_norm = std::sqrt(sum_squares) / loss_scale;
  const double lr = schedule_.at(iteration_);
  // Outside fp16's skipped steps a non-finite loss or gradient norm would
  // only spread (NaN weights, every later loss NaN): stop before the step
  // is applied and before anything is saved. Every rank sees the same
  // averaged loss and norm, so every rank stops here.
  if ((!scaler_ || std::isfinite(grad_norm)) && (!std::isfinite(loss) || !std::isfinite(grad_norm))) {
    log_->end_progress();
    std::string last;
    if (!result_.last_checkpoint.empty())
      last = "the last checkpoint is " + result_.last_checkpoint;
    else if (!resumed_from_.empty())
      last = "the last checkpoint is " + resumed_from_ + ", which this run resumed from";
    else
      last = tc_.save.empty() ? "no checkpoints are saved (training.save is empty)" : "no checkpoint was saved yet";
    throw CollectiveError(fmt::format(
        "step {}: the loss is {} and the gradient norm {}: training diverged, or the weights or the optimizer state "
        "hold a non-finite value; stopped without applying the step or saving ({})",
        iteration_ + 1, loss, grad_norm, last));
  }
  if (scaler_ && !std::isfinite(grad_norm)) {
    const double old_scale = scaler_->scale();
    scaler_->update(true);
    ++skipped_steps_;
    log_->log().warn("step {}: inf/NaN gradients at loss scale {}; step skipped ({} so far), loss scale now {}",
                     iteration_ + 1, old_scale, skipped_steps_, scaler_->scale());
  } else {
    if (scaler_) scaler_->update(false);
    double grad_scale = 1.0 / loss_scale;
    const double clip = cfg_.optimizer.gradient_clipping;
    if (clip > 0.0) {
      const double coef = clip / (grad_norm + 1e-6);
      if (coef < 1.0) grad_scale *= coef;
    }
    t = Clock::now();
    // The step number counts the updates applied (Adam's bias correction).
    optimizer_->step({static_cast<float>(lr), iteration_ + 1 - skipped_steps_, static_cast<float>(grad_scale)});
    arena.mark_params_changed();
    backend_->synchronize();
    compute += seconds(t, Clock::now());
  }
  ++iteration_;
  last_step_comm_bytes_ = comm_->stats().total_bytes() - comm_bytes_before;
  step_comm_bytes_ += last_step_comm_bytes_;
  ++steps_run_;
  log_step(iteration_, loss, lr, grad_norm);
  compute_seconds_ += compute;
  step_seconds_total_ += seconds(step_start, Clock::now());
  return loss;
}

// What each rank holds for the parameters and the optimizer (the largest
// over the ranks): the arena's buffers now, and the optimizer's own state and
// partitions; logged and written to the run directory's memory.json. Also
// the arena's peak: at start-up, over building the model and initialising
// or loading the weights; at the end of the run (at_end), over the whole
// run, saves included, added to memory.json as arena_peak_bytes_run.
void Trainer::log_memory(bool at_end) {
  Tensor m = Tensor::zeros_host({4}, DType::i64);
  m.ptr<std::int64_t>()[0] = static_cast<std::int64_t>(model_->arena().bytes());
  m.ptr<std::int64_t>()[1] = optimizer_->state_bytes();
  m.ptr<std::int64_t>()[2] = optimizer_->parameter_bytes();
  m.ptr<std::int64_t>()[3] = static_cast<std::int64_t>(model_->arena().peak_bytes());
  if (comm_->size() > 1) comm_->all_reduce(m, ReduceOp::max);
  const std::int64_t* v = m.ptr<std::int64_t>();
  auto mib = [](std::int64_t b) { return static_cast<double>(b) / (1024.0 * 1024.0); };
  if (at_end) {
    log_->log().info("memory per rank: arena peak {:.2f} MiB over the run", mib(v[3]));
    memory_["arena_peak_bytes_run"] = v[3];
    log_->write_json("memory.json", memory_);
    return;
  }
  log_->log().info(
      "memory per rank: arena {:.2f} MiB (peak {:.2f} MiB), optimizer state {:.2f} MiB, optimizer "
      "partitions {:.2f} MiB ({}{})",
      mib(v[0]), mib(v[3]), mib(v[1]), mib(v[2]), optimizer_->name(),
      optimizer_->partitions_state() ? fmt::format(", ZeRO stage {} over {} ranks", tc_.zero_stage, comm_->size())
                                     : std::string());
  memory_ = {{"arena_bytes", v[0]},
             {"arena_peak_bytes", v[3]},
             {"optimizer_state_bytes", v[1]},
             {"optimizer_partition_bytes", v[2]},
             {"optimizer", optimizer_->name()},
             {"zero_stage", tc_.zero_stage},
             {"ranks", comm_->size()}};
  log_->write_json("memory.json", memory_);
}

void Trainer::log_step(std::int64_t iteration, double loss, double lr, double grad_norm) {
  interval_loss_ += loss;
  ++interval_steps_;
  const auto now = Clock::now();
  const double since = seconds(interval_start_, now);
  const double per_step = since / static_cast<double>(interval_steps_);
  const double eta = per_step * static_cast<double>(tc_.train_iters - iteration);
  const double tokens_per_s = static_cast<double>(tokens_per_step_) / per_step;
  log_->progress(iteration, tc_.train_iters, loss, tokens_per_s, eta);
  if (iteration % tc_.log_interval != 0 && iteration != tc_.train_iters) return;
  const double mean_loss = interval_loss_ / static_cast<double>(interval_steps_);
  const double flops = model_->flops_per_token() * tokens_per_s / static_cast<double>(comm_->size());
  const double mfu = tc_.peak_tflops > 0 ? flops / (tc_.peak_tflops * 1e12) : 0.0;
  const double elapsed = seconds(run_start_, now);
  std::string mfu_text = tc_.peak_tflops > 0 ? fmt::format(" | MFU {:.1f}%", 100.0 * mfu) : std::string();
  if (scaler_) mfu_text += fmt::format(" | loss scale {} | skipped {}", scaler_->scale(), skipped_steps_);
  log_->log().info(
      "step {:>{}}/{} | loss {:.4f} | lr {:.3e} | grad norm {:.3f} | {:.0f} tokens/s{} | {} elapsed | ETA {}",
      iteration, std::to_string(tc_.train_iters).size(), tc_.train_iters, mean_loss, lr, grad_norm, tokens_per_s,
      mfu_text, format_duration(elapsed), format_duration(eta));
  nlohmann::json rec{{"step", iteration},
                     {"loss", mean_loss},
                     {"lr", lr},
                     {"grad_norm", grad_norm},
                     {"tokens_per_sec", tokens_per_s},
                     {"elapsed_s", elapsed},
                     {"tokens", iteration * tokens_per_step_}};
  if (tc_.peak_tflops > 0) rec["mfu"] = mfu;
  if (comm_->size() > 1) rec["comm_bytes"] = last_step_comm_bytes_;  // sent by this rank in the last step
  if (scaler_) {
    rec["loss_scale"] = scaler_->scale();
    rec["skipped_steps"] = skipped_steps_;
  }
  log_->metrics(rec);
  log_scalars(*log_, rec,
              {{"loss", "train/lm_loss"},
               {"lr", "train/learning_rate"},
               {"grad_norm", "train/grad_norm"},
               {"tokens_per_sec", "runtime/tokens_per_sec"},
               {"mfu", "runtime/mfu"},
               {"loss_scale", "train/loss_scale"}});
  interval_loss_ = 0.0;
  interval_steps_ = 0;
  interval_start_ = Clock::now();
}

double Trainer::evaluate(Split split, std::int64_t batches) {
  double sum = 0.0;
  for (std::int64_t i = 0; i < batches; ++i) {
    Batch batch = data_->next(split);
    sum += model_->forward_loss(batch.input_ids, batch.labels, batch.loss_mask);
  }
  double loss = sum / static_cast<double>(batches);
  if (comm_->size() > 1) {
    Tensor l = Tensor::empty(nullptr, {1}, DType::f64);
    l.ptr<double>()[0] = loss;
    comm_->all_reduce(l, ReduceOp::avg);
    loss = l.ptr<double>()[0];
  }
  const double ppl = std::exp(std::min(loss, 700.0));
  log_->log().info("{} loss at step {}: {:.4f} | perplexity {:.3f}", split_name(split), iteration_, loss, ppl);
  const nlohmann::json rec{{"step", iteration_}, {"split", split_name(split)}, {"loss", loss}, {"perplexity", ppl}};
  log_->metrics(rec);
  // GPT-NeoX's chart names: "validation" and "test".
  const std::string chart = split == Split::valid ? "validation" : split_name(split);
  log_scalars(*log_, rec, {{"loss", chart + "/lm_loss"}, {"perplexity", chart + "/lm_loss_ppl"}});
  interval_start_ = Clock::now();  // evaluation time is not training throughput
  return loss;
}

void Trainer::save() {
  if (tc_.save.empty()) return;
  CheckpointState st;
  st.iteration = iteration_;
  for (Split s : {Split::train, Split::valid, Split::test}) st.data_positions[split_name(s)] = data_->position(s);
  std::ostringstream rng;
  rng << rng_;
  st.rng_state = rng.str();
  // The tokenizer's files go into the checkpoint, and its config names them
  // there (relative names resolve against the checkpoint directory).
  Config saved = cfg_;
  for (const TokenizerFile& f : tokenizer_files(cfg_.tokenizer)) {
    st.files[f.name] = f.path;
    (f.key == "vocab_file" ? saved.tokenizer.vocab_file : saved.tokenizer.merge_file) = f.name;
  }
  st.config_toml = config_to_toml(saved);
  st.trainer_values["skipped_steps"] = static_cast<double>(skipped_steps_);
  st.trainer_values["global_batch_size"] = static_cast<double>(tokens_per_step_ / cfg_.model.seq_length);
  // Where this global batch size began, so that a load can check the train
  // position against the iteration (docs/checkpoints.md). A data plugin that
  // counts its position otherwise than data_source.h says gets no such check.
  const std::int64_t expected = batch_start_position_ + (iteration_ - batch_start_iteration_) * global_batch();
  if (position_facts_ && data_->position(Split::train) != expected) {
    position_facts_ = false;
    log_->log().warn(
        "data plugin '{}': train position {} after step {}, but {} samples per step from step {} (at {}) make {}; its "
        "checkpoints' data positions cannot be checked on load",
        cfg_.plugins.data, data_->position(Split::train), iteration_, global_batch(), batch_start_iteration_,
        batch_start_position_, expected);
  }
  if (position_facts_) {
    st.trainer_values["batch_start_iteration"] = static_cast<double>(batch_start_iteration_);
    st.trainer_values["batch_start_train_position"] = static_cast<double>(batch_start_position_);
  }
  if (scaler_)
    for (const auto& [key, value] : scaler_->state()) st.trainer_values[key] = value;
  // Every rank takes part: each writes its optimizer shard, and under ZeRO-3
  // gathers the parameters unit by unit for rank 0 to write.
  result_.last_checkpoint = save_checkpoint(tc_.save, *model_, optimizer_.get(), st,
                                            static_cast<int>(tc_.keep_last_n_checkpoints), comm_.get());
  interval_start_ = Clock::now();
}

TrainResult Trainer::run() {
  g_stop.store(false);
  setup();
  run_start_ = interval_start_ = Clock::now();
  const std::int64_t start = iteration_;
  if (start >= tc_.train_iters)
    log_->log().info("nothing to do: the checkpoint is at step {} of {}", start, tc_.train_iters);
  bool saved_last = false;
  while (iteration_ < tc_.train_iters) {
    result_.train_losses.push_back(train_step());
    saved_last = false;
    if (tc_.eval_iters > 0 && iteration_ % tc_.eval_interval == 0)
      result_.valid_loss = evaluate(Split::valid, tc_.eval_iters);
    if (iteration_ % tc_.checkpoint_factor == 0) {
      save();
      saved_last = true;
    }
    const bool exit_now = tc_.exit_interval > 0 && iteration_ % tc_.exit_interval == 0 && iteration_ < tc_.train_iters;
    if (g_stop.load() || exit_now) {
      log_->end_progress();
      if (exit_now)
        log_->log().info("exit_interval {}: saving and exiting after step {}", tc_.exit_interval, iteration_);
      else
        log_->log().warn("stop requested: saving and exiting after step {}", iteration_);
      result_.stopped = true;
      break;
    }
  }
  log_->end_progress();
  if (!result_.stopped && tc_.eval_iters > 0 && data_->num_samples(Split::test) > 0)
    result_.test_loss = evaluate(Split::test, tc_.eval_iters);
  if (!saved_last && iteration_ > start) save();
  if (iteration_ > start) log_memory(true);
  result_.iterations = iteration_;
  result_.skipped_steps = skipped_steps_;
  if (steps_run_ > 0)
    result_.comm_bytes_per_step = static_cast<double>(step_comm_bytes_) / static_cast<double>(steps_run_);
  const double total = seconds(run_start_, Clock::now());
  if (step_seconds_total_ > 0) result_.overhead = 1.0 - compute_seconds_ / step_seconds_total_;
  log_->log().info("{} after {} steps in {}; trainer overhead {:.2f}% of step time (data, clipping, logging)",
                   result_.stopped ? "stopped" : "done", iteration_ - start, format_duration(total),
                   100.0 * result_.overhead);
  return result_;
}

}  // namespace

TrainResult train(const Config& config) {
  Trainer trainer(config);
  return trainer.run();
}

void request_stop() noexcept { g_stop.store(true); }

}  // namespace neox
