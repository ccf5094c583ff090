// SPDX-License-Identifier: Apache-2.0
// The config loader: TOML++ parses, one schema table validates and documents.
//
// Every key of the fixed tables ([plugins], [model], [optimizer], [training])
// is one KeyDef: table, key, type, range or allowed values, a one-line doc and
// the member of Config it sets. The same table drives the file parser, the
// command-line overrides and config_reference_markdown(), so the reference in
// configs/README.md cannot drift from what the parser accepts. Defaults are
// read from a default-constructed Config, so they cannot drift either.
//
// TOML++ is used header-only, in this translation unit only.

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "neox/error.h"
#include "neox/kernels.h"
#include "neox/train/config.h"

// TOML++ 3.3 checks its parser's internal preconditions with assert(), and
// malformed input can break one: "[\n" (a table header without a name) aborts
// a debug build (marzer/tomlplusplus#301), and where NDEBUG turns the checks
// into optimiser assumptions it would be undefined behaviour. So the checks are
// on in every build of this file and throw, and the loader reports the input
// as malformed TOML. NDEBUG is lifted only while TOML++ itself is read (every
// other header is included above, and TOML++ does not include <cassert> when
// TOML_ASSERT is defined). In TOML++'s noexcept functions a failed check still
// terminates, as the stock assert() would abort: -Wterminate is silenced there.
namespace neox::toml_check {
struct Failed {
  const char* expr;
};
}  // namespace neox::toml_check
#define TOML_HEADER_ONLY 1
#define TOML_EXCEPTIONS 1
#define TOML_ASSERT(expr) ((expr) ? static_cast<void>(0) : throw ::neox::toml_check::Failed{#expr})
#pragma push_macro("NDEBUG")
#undef NDEBUG
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wterminate"
#include <toml++/toml.h>
#pragma GCC diagnostic pop
#pragma pop_macro("NDEBUG")

namespace neox {

Options PluginsConfig::options_for(const std::string& plugin) const {
  auto it = options.find(plugin);
  if (it != options.end()) return it->second;
  return Options("plugins.options." + plugin);
}

std::string optimizer_plugin(const Config& config) {
  const std::string& chosen = config.plugins.optimizer;
  const std::string& partitioned = config.plugins.zero_optimizer;
  const std::int64_t stage = config.training.zero_stage;
  const std::string where = config.path.empty() ? std::string("config") : config.path;
  if (stage == 0) {
    if (chosen == partitioned)
      throw Error(where + ": plugins.optimizer = \"" + chosen + "\" needs training.zero_stage 1, 2 or 3 (it is 0)");
    return chosen;
  }
  // A GPT-NeoX config says zero_optimization.stage and leaves the optimizer
  // at the default.
  if (chosen == PluginsConfig().optimizer || chosen == partitioned) return partitioned;
  throw Error(where + ": training.zero_stage = " + std::to_string(stage) +
              " needs the zero optimizer (AdamW with "
              "ZeRO partitioning, plugins.zero_optimizer = \"" +
              partitioned + "\"), but plugins.optimizer = \"" + chosen + "\"; set plugins.optimizer to \"" +
              PluginsConfig().optimizer + "\" or \"" + partitioned + "\", or zero_stage to 0");
}

OptimizerContext optimizer_context(const Config& config) {
  OptimizerContext c;
  c.config = config.path.empty() ? std::string("config") : config.path;
  c.type = config.optimizer.type;
  c.beta1 = config.optimizer.beta1;
  c.beta2 = config.optimizer.beta2;
  c.eps = config.optimizer.eps;
  const TrainingConfig& t = config.training;
  c.zero_stage = t.zero_stage;
  c.zero_reduce_bucket_size = t.zero_reduce_bucket_size;
  c.zero_allgather_bucket_size = t.zero_allgather_bucket_size;
  c.zero_overlap_comm = t.zero_overlap_comm;
  c.zero_contiguous_gradients = t.zero_contiguous_gradients;
  return c;
}

namespace {

// ---------------------------------------------------------------------------
// Values

enum class Type { Bool, Int, Float, String, StringArray, FloatPair };

// A value as parsed, before it is checked against the schema. vector<double>
// holds arrays of numbers (only [optimizer] betas takes one).
using Value = std::variant<bool, std::int64_t, double, std::string, std::vector<std::string>, std::vector<double>>;

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr std::int64_t kI64Max = std::numeric_limits<std::int64_t>::max();

// Shortest text that reads back as the same double, in TOML syntax
// ("0.0006", "1e-8", "10000.0").
std::string format_double(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, v);
  std::string s(buf, res.ptr);
  auto e = s.find('e');
  if (e != std::string::npos) {
    // "1e-08" -> "1e-8", "1e+20" -> "1e20"
    std::string mant = s.substr(0, e), exp = s.substr(e + 1);
    std::string sign;
    if (!exp.empty() && (exp[0] == '-' || exp[0] == '+')) {
      if (exp[0] == '-') sign = "-";
      exp.erase(0, 1);
    }
    while (exp.size() > 1 && exp[0] == '0') exp.erase(0, 1);
    return mant + "e" + sign + exp;
  }
  if (s.find('.') == std::string::npos) s += ".0";
  return s;
}

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    unsigned char u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20 || u == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", u);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// The value in TOML syntax (for defaults in the reference and for messages).
std::string format_value(const Value& v) {
  struct Visitor {
    std::string operator()(bool b) const { return b ? "true" : "false"; }
    std::string operator()(std::int64_t i) const { return std::to_string(i); }
    std::string operator()(double d) const { return format_double(d); }
    std::string operator()(const std::string& s) const { return quote(s); }
    std::string operator()(const std::vector<std::string>& a) const {
      std::string out = "[";
      for (size_t i = 0; i < a.size(); ++i) out += (i ? ", " : "") + quote(a[i]);
      return out + "]";
    }
    std::string operator()(const std::vector<double>& a) const {
      std::string out = "[";
      for (size_t i = 0; i < a.size(); ++i) out += (i ? ", " : "") + format_double(a[i]);
      return out + "]";
    }
  };
  return std::visit(Visitor{}, v);
}

const char* value_kind(const Value& v) {
  switch (v.index()) {
    case 0:
      return "a boolean";
    case 1:
      return "an integer";
    case 2:
      return "a float";
    case 3:
      return "a string";
    case 4:
      return "an array of strings";
    default:
      return "an array of numbers";
  }
}

const char* type_name(Type t) {
  switch (t) {
    case Type::Bool:
      return "boolean";
    case Type::Int:
      return "integer";
    case Type::Float:
      return "float";
    case Type::String:
      return "string";
    case Type::StringArray:
      return "array of strings";
    case Type::FloatPair:
      return "array of 2 floats";
  }
  return "?";
}

const char* type_article(Type t) {
  return t == Type::Int || t == Type::StringArray || t == Type::FloatPair ? "an" : "a";
}

// Problem text for a value of the wrong type: "expected an integer, got a float (1.5)".
std::string wrong_type(Type expected, const Value& got) {
  std::string what = std::string(type_article(expected)) + " " + type_name(expected);
  if (expected == Type::FloatPair) what = "an array of 2 numbers";
  std::string shown = format_value(got);
  if (shown.size() > 60) shown = shown.substr(0, 57) + "...";
  return "expected " + what + ", got " + value_kind(got) + " (" + shown + ")";
}

// What a TOML node holds, for messages about nodes that are not values.
std::string node_kind(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::date:
      return "a date";
    case toml::node_type::time:
      return "a time";
    case toml::node_type::date_time:
      return "a date-time";
    default:
      return "nothing";
  }
}

// Converts a TOML node to a Value; returns the problem when it cannot.
std::optional<Value> to_value(const toml::node& n, std::string& problem) {
  if (auto* b = n.as_boolean()) return Value{b->get()};
  if (auto* i = n.as_integer()) return Value{i->get()};
  if (auto* f = n.as_floating_point()) return Value{f->get()};
  if (auto* s = n.as_string()) return Value{s->get()};
  if (auto* a = n.as_array()) {
    bool all_strings = true, all_numbers = true;
    for (const toml::node& e : *a) {
      all_strings &= e.is_string();
      all_numbers &= e.is_integer() || e.is_floating_point();
    }
    if (a->empty() || all_strings) {
      std::vector<std::string> out;
      for (const toml::node& e : *a) out.push_back(e.as_string()->get());
      return Value{std::move(out)};
    }
    if (all_numbers) {
      std::vector<double> out;
      for (const toml::node& e : *a)
        out.push_back(e.is_integer() ? static_cast<double>(e.as_integer()->get()) : e.as_floating_point()->get());
      return Value{std::move(out)};
    }
    problem = "arrays must hold only strings or only numbers";
    return std::nullopt;
  }
  problem = std::string(node_kind(n)) + " is not a supported value here";
  return std::nullopt;
}

// ---------------------------------------------------------------------------
// The schema

struct KeyDef {
  std::string table;  // "model", "plugins", ...
  std::string key;
  Type type = Type::String;
  std::int64_t imin = std::numeric_limits<std::int64_t>::min(), imax = kI64Max;
  double fmin = -kInf, fmax = kInf;
  bool fmin_open = false, fmax_open = false;
  std::vector<std::string> allowed;
  bool plugin_name = false;  // [a-z0-9-]+
  bool allow_empty = true;   // for plugin names: "" means none
  std::string values_doc;    // the reference's "allowed" column, where the checks are not the schema's
  std::string doc;
  std::function<void(Config&, const Value&)> set;
  std::function<Value(const Config&)> get;

  std::string dotted() const { return table + "." + key; }

  KeyDef&& range(std::int64_t lo, std::int64_t hi) && {
    imin = lo;
    imax = hi;
    return std::move(*this);
  }
  // Float range; open ends are excluded.
  KeyDef&& frange(double lo, double hi, bool lo_open = false, bool hi_open = false) && {
    fmin = lo;
    fmax = hi;
    fmin_open = lo_open;
    fmax_open = hi_open;
    return std::move(*this);
  }
  KeyDef&& one_of(std::vector<std::string> values) && {
    allowed = std::move(values);
    return std::move(*this);
  }
  KeyDef&& values(std::string text) && {
    values_doc = std::move(text);
    return std::move(*this);
  }
  KeyDef&& plugin(bool may_be_empty) && {
    plugin_name = true;
    allow_empty = may_be_empty;
    return std::move(*this);
  }
};

template <class T>
constexpr Type type_of() {
  if constexpr (std::is_same_v<T, bool>)
    return Type::Bool;
  else if constexpr (std::is_same_v<T, std::int64_t> || std::is_same_v<T, std::uint64_t>)
    return Type::Int;
  else if constexpr (std::is_same_v<T, double>)
    return Type::Float;
  else if constexpr (std::is_same_v<T, std::string>)
    return Type::String;
  else
    return Type::StringArray;
}

// A key bound to member `m` of the sub-struct `s` of Config. `set` receives a
// value already checked against the type and range.
template <class S, class T>
KeyDef field(const char* table, const char* key, S Config::*s, T S::*m, const char* doc) {
  KeyDef d;
  d.table = table;
  d.key = key;
  d.type = type_of<T>();
  d.doc = doc;
  d.set = [s, m](Config& c, const Value& v) {
    if constexpr (std::is_same_v<T, std::uint64_t>)
      (c.*s).*m = static_cast<std::uint64_t>(std::get<std::int64_t>(v));
    else
      (c.*s).*m = std::get<T>(v);
  };
  d.get = [s, m](const Config& c) -> Value {
    if constexpr (std::is_same_v<T, std::uint64_t>)
      return static_cast<std::int64_t>((c.*s).*m);
    else
      return (c.*s).*m;
  };
  return d;
}

const std::vector<std::string> kInitMethods = {"normal", "small_init", "wang_init"};

std::vector<KeyDef> build_schema() {
  using C = Config;
  using P = PluginsConfig;
  using M = ModelConfig;
  using O = OptimizerConfig;
  using T = TrainingConfig;
  using K = TokenizerConfig;
  constexpr std::int64_t kBig = 1'000'000'000'000;  // 1e12
  std::vector<KeyDef> s;

  // [plugins]
  s.push_back(
      field("plugins", "backend", &C::plugins, &P::backend, "Backend plugin: tensors, memory and the kernel table.")
          .plugin(false));
  s.push_back(
      field("plugins", "comm", &C::plugins, &P::comm, "Communicator plugin (`local`: one process, no communication).")
          .plugin(false));
  s.push_back(
      field("plugins", "optimizer", &C::plugins, &P::optimizer, "Optimizer plugin, implementing [optimizer] `type`.")
          .plugin(false));
  s.push_back(field("plugins", "zero_optimizer", &C::plugins, &P::zero_optimizer,
                    "The optimizer plugin of training.zero_stage 1-3 (DeepSpeed's zero_optimization), used "
                    "instead of `optimizer` while that is the default: AdamW partitioned over the data-parallel "
                    "ranks. On one rank, where there is nothing to partition, `optimizer` trains.")
                  .plugin(false));
  s.push_back(field("plugins", "data", &C::plugins, &P::data, "Data source plugin; empty: none chosen.").plugin(true));
  s.push_back(field("plugins", "search_paths", &C::plugins, &P::search_paths,
                    "Extra directories searched for plugins first, relative to the config file's "
                    "directory (on the command line: to the working directory)."));

  // [model]
  s.push_back(field("model", "num_layers", &C::model, &M::num_layers, "Transformer layers.").range(1, 1024));
  s.push_back(
      field("model", "hidden_size", &C::model, &M::hidden_size, "Model width; a multiple of num_attention_heads.")
          .range(1, 65536));
  s.push_back(field("model", "num_attention_heads", &C::model, &M::num_attention_heads, "Attention heads per layer.")
                  .range(1, 1024));
  s.push_back(field("model", "intermediate_size", &C::model, &M::intermediate_size, "MLP width; 0: 4 * hidden_size.")
                  .range(0, 1'048'576));
  s.push_back(
      field("model", "vocab_size", &C::model, &M::vocab_size, "The tokenizer's vocabulary size (before padding).")
          .range(1, 4'194'304));
  s.push_back(field("model", "make_vocab_size_divisible_by", &C::model, &M::make_vocab_size_divisible_by,
                    "The embedding and output layers have vocab_size rounded up to a multiple "
                    "of this.")
                  .range(1, 65536));
  s.push_back(field("model", "seq_length", &C::model, &M::seq_length,
                    "Training sequence length; at most max_position_embeddings.")
                  .range(1, 1'048'576));
  s.push_back(field("model", "max_position_embeddings", &C::model, &M::max_position_embeddings,
                    "Longest sequence the model supports (size of the learned position table).")
                  .range(1, 1'048'576));
  s.push_back(field("model", "pos_emb", &C::model, &M::pos_emb,
                    "Position embedding: rotary (RoPE), learned (absolute table) or none.")
                  .one_of({"rotary", "learned", "none"}));
  s.push_back(field("model", "rotary_pct", &C::model, &M::rotary_pct,
                    "Fraction of each head's dimensions that rotary rotates; "
                    "int(head_size * rotary_pct) must be even.")
                  .frange(0.0, 1.0, true, false));
  s.push_back(field("model", "rotary_emb_base", &C::model, &M::rotary_emb_base,
                    "Rotary base: angle = position * base^(-2i/rotary_dims).")
                  .frange(1.0, 1e12));
  s.push_back(field("model", "gpt_j_residual", &C::model, &M::gpt_j_residual,
                    "Parallel residual: x + attn(ln1(x)) + mlp(ln2(x)) (Pythia, GPT-NeoX-20B)."));
  s.push_back(field("model", "no_weight_tying", &C::model, &M::no_weight_tying,
                    "true: separate output layer; false: the output layer reuses the input "
                    "embedding."));
  s.push_back(field("model", "layernorm_epsilon", &C::model, &M::layernorm_epsilon, "LayerNorm epsilon.")
                  .frange(0.0, 1.0, true, false));
  s.push_back(
      field("model", "init_method", &C::model, &M::init_method, "Init of the input-side weights (GPT-NeoX names).")
          .one_of(kInitMethods));
  s.push_back(field("model", "output_layer_init_method", &C::model, &M::output_layer_init_method,
                    "Init of the weights that write into the residual stream (attention dense, "
                    "MLP output).")
                  .one_of(kInitMethods));
  s.push_back(field("model", "init_method_std", &C::model, &M::init_method_std, "Standard deviation for `normal` init.")
                  .frange(0.0, 1.0, true, false));

  // [optimizer]
  s.push_back(field("optimizer", "type", &C::optimizer, &O::type,
                    "Optimizer algorithm, passed to the optimizer plugin, which refuses one it does not "
                    "implement (`adamw` and `zero` implement `adamw`).")
                  .values("an algorithm name"));
  s.push_back(field("optimizer", "lr", &C::optimizer, &O::lr, "Learning rate.").frange(0.0, 1.0, true, false));
  s.push_back(
      field("optimizer", "beta1", &C::optimizer, &O::beta1, "Adam first-moment decay.").frange(0.0, 1.0, false, true));
  s.push_back(
      field("optimizer", "beta2", &C::optimizer, &O::beta2, "Adam second-moment decay.").frange(0.0, 1.0, false, true));
  {
    // GPT-NeoX's form: betas = [beta1, beta2].
    KeyDef d;
    d.table = "optimizer";
    d.key = "betas";
    d.type = Type::FloatPair;
    d.doc = "GPT-NeoX's spelling of [beta1, beta2]; not together with beta1 or beta2.";
    d.fmin = 0.0;
    d.fmax = 1.0;
    d.fmax_open = true;
    d.set = [](Config& c, const Value& v) {
      auto& a = std::get<std::vector<double>>(v);
      c.optimizer.beta1 = a[0];
      c.optimizer.beta2 = a[1];
    };
    d.get = [](const Config& c) -> Value { return std::vector<double>{c.optimizer.beta1, c.optimizer.beta2}; };
    s.push_back(std::move(d));
  }
  s.push_back(field("optimizer", "eps", &C::optimizer, &O::eps, "Adam epsilon.").frange(0.0, 1.0, true, false));
  s.push_back(field("optimizer", "weight_decay", &C::optimizer, &O::weight_decay,
                    "Decoupled (AdamW) weight decay (not applied to biases and LayerNorm "
                    "parameters, as in GPT-NeoX).")
                  .frange(0.0, 1.0));
  s.push_back(field("optimizer", "lr_decay_style", &C::optimizer, &O::lr_decay_style,
                    "Learning-rate decay after warm-up (GPT-NeoX's AnnealingLR).")
                  .one_of({"constant", "linear", "cosine", "exponential"}));
  s.push_back(field("optimizer", "lr_decay_iters", &C::optimizer, &O::lr_decay_iters,
                    "Steps over which the rate decays to min_lr; 0: train_iters.")
                  .range(0, kBig));
  s.push_back(field("optimizer", "min_lr", &C::optimizer, &O::min_lr, "Floor of the learning rate.").frange(0.0, 1.0));
  s.push_back(field("optimizer", "warmup", &C::optimizer, &O::warmup,
                    "Fraction of train_iters over which the rate rises linearly from 0.")
                  .frange(0.0, 1.0));
  s.push_back(field("optimizer", "gradient_clipping", &C::optimizer, &O::gradient_clipping,
                    "Clip the global gradient norm to this; 0: no clipping.")
                  .frange(0.0, 1e6));

  // [training]
  s.push_back(field("training", "train_micro_batch_size_per_gpu", &C::training, &T::train_micro_batch_size_per_gpu,
                    "Sequences per forward/backward pass on each device.")
                  .range(1, 65536));
  s.push_back(field("training", "gradient_accumulation_steps", &C::training, &T::gradient_accumulation_steps,
                    "Micro-batches accumulated per optimizer step.")
                  .range(1, 65536));
  s.push_back(
      field("training", "train_iters", &C::training, &T::train_iters, "Optimizer steps to train.").range(0, kBig));
  s.push_back(
      field("training", "seed", &C::training, &T::seed, "Seed for weight init and data order.").range(0, kI64Max));
  s.push_back(field("training", "eval_interval", &C::training, &T::eval_interval,
                    "Evaluate on the validation split every this many steps.")
                  .range(1, kBig));
  s.push_back(field("training", "eval_iters", &C::training, &T::eval_iters,
                    "Micro-batches per evaluation (validation, and test at the end); 0: none.")
                  .range(0, kBig));
  s.push_back(
      field("training", "log_interval", &C::training, &T::log_interval, "Log a line of metrics every this many steps.")
          .range(1, kBig));
  s.push_back(field("training", "log_dir", &C::training, &T::log_dir,
                    "Directory of run directories (config, metrics.jsonl, train.log, TensorBoard "
                    "events), relative to the working directory."));
  s.push_back(field("training", "run_name", &C::training, &T::run_name,
                    "Name of this run's directory under log_dir; empty: date and time."));
  s.push_back(field("training", "tensorboard", &C::training, &T::tensorboard,
                    "Also write the logged metrics to a TensorBoard event file "
                    "(events.out.tfevents.*) in the run directory (rank 0); view them with "
                    "`tensorboard --logdir runs` (the log_dir)."));
  s.push_back(field("training", "peak_tflops", &C::training, &T::peak_tflops,
                    "Peak TFLOP/s of one device, for MFU; 0: MFU not reported.")
                  .frange(0.0, 1e6));
  s.push_back(field("training", "save", &C::training, &T::save,
                    "Checkpoint directory; empty: no checkpoints. One run's at a time: the run "
                    "locks it while it trains, and a run that does not resume from it (load) "
                    "refuses to save into one that already holds checkpoints "
                    "(docs/checkpoints.md)."));
  s.push_back(field("training", "load", &C::training, &T::load,
                    "Resume from this checkpoint (a save directory or a global_step directory), "
                    "or `hf:DIR` to start from a Hugging Face GPTNeoXForCausalLM directory; "
                    "empty: fresh weights. `load = save` (GPT-NeoX's habit) resumes the run "
                    "saving there, and starts at step 0 while it has no checkpoint yet."));
  s.push_back(field("training", "checkpoint_factor", &C::training, &T::checkpoint_factor,
                    "Save a checkpoint every this many steps (and at the end).")
                  .range(1, kBig));
  s.push_back(field("training", "keep_last_n_checkpoints", &C::training, &T::keep_last_n_checkpoints,
                    "Keep only the newest N checkpoints; 0: keep all.")
                  .range(0, 1'000'000));
  s.push_back(field("training", "finetune", &C::training, &T::finetune,
                    "With load: take the weights only, and start at step 0 with a fresh "
                    "optimizer and data order."));
  s.push_back(field("training", "exit_interval", &C::training, &T::exit_interval,
                    "Stop, after saving a checkpoint, when the step is a multiple of this (to "
                    "train in pieces, e.g. within a job's time limit); 0: never.")
                  .range(0, kBig));
  s.push_back(field("training", "precision", &C::training, &T::precision,
                    "Compute precision (GPT-NeoX's fp16/bf16 settings): activations and the "
                    "weights' working copy in this type, with f32 master weights, gradients "
                    "and optimizer state. fp16 uses loss scaling (the keys below).")
                  .one_of({"fp32", "bf16", "fp16"}));
  s.push_back(field("training", "checkpoint_activations", &C::training, &T::checkpoint_activations,
                    "Keep only each chunk of blocks' input during forward and recompute its "
                    "activations in backward: less memory for about a third more compute."));
  s.push_back(field("training", "checkpoint_num_layers", &C::training, &T::checkpoint_num_layers,
                    "Transformer blocks per recomputed chunk (with checkpoint_activations).")
                  .range(1, 1'000'000));
  s.push_back(field("training", "loss_scale", &C::training, &T::loss_scale,
                    "fp16 only: a fixed loss scale; 0: dynamic loss scaling.")
                  .frange(0.0, 1e30));
  s.push_back(field("training", "initial_scale_power", &C::training, &T::initial_scale_power,
                    "fp16 only: dynamic scaling starts at 2^this.")
                  .range(0, 100));
  s.push_back(field("training", "loss_scale_window", &C::training, &T::loss_scale_window,
                    "fp16 only: double the scale after this many steps without an overflow.")
                  .range(1, kBig));
  s.push_back(field("training", "hysteresis", &C::training, &T::hysteresis,
                    "fp16 only: overflows tolerated before the scale is first halved.")
                  .range(1, 1'000'000));
  s.push_back(field("training", "min_loss_scale", &C::training, &T::min_loss_scale,
                    "fp16 only: the dynamic scale never goes below this.")
                  .frange(0.0, 1e30, true));
  s.push_back(field("training", "model_parallel_size", &C::training, &T::model_parallel_size,
                    "Tensor parallelism (GPT-NeoX's model_parallel_size). Not implemented: a "
                    "run with more than 1 is refused.")
                  .range(1, 1024));
  s.push_back(field("training", "pipe_parallel_size", &C::training, &T::pipe_parallel_size,
                    "Pipeline parallelism (GPT-NeoX's pipe_parallel_size; 0 and 1 both mean "
                    "none here). Not implemented: a run with more than 1 is refused.")
                  .range(0, 1024));
  s.push_back(field("training", "zero_stage", &C::training, &T::zero_stage,
                    "DeepSpeed ZeRO stage (zero_optimization.stage): 0 none; 1 optimizer state, 2 "
                    "also gradients, 3 also parameters partitioned over the data-parallel ranks "
                    "(the `zero` optimizer plugin; see docs/distributed.md).")
                  .range(0, 3));
  s.push_back(field("training", "zero_reduce_bucket_size", &C::training, &T::zero_reduce_bucket_size,
                    "ZeRO: most elements per reduce-scatter (DeepSpeed's reduce_bucket_size); also "
                    "the bucket of the data-parallel gradient all-reduce.")
                  .range(1, std::int64_t{1} << 40));
  s.push_back(field("training", "zero_allgather_bucket_size", &C::training, &T::zero_allgather_bucket_size,
                    "ZeRO: most elements per all-gather (DeepSpeed's allgather_bucket_size).")
                  .range(1, std::int64_t{1} << 40));
  s.push_back(field("training", "zero_overlap_comm", &C::training, &T::zero_overlap_comm,
                    "DeepSpeed's overlap_comm: average each layer's gradients while backward goes on "
                    "with the layers before it (data parallelism and ZeRO stages 2-3; the comm "
                    "plugin must overlap: mpi, nccl)."));
  s.push_back(field("training", "zero_contiguous_gradients", &C::training, &T::zero_contiguous_gradients,
                    "ZeRO: DeepSpeed's contiguous_gradients. Accepted; gradient partitions are "
                    "always contiguous."));

  // [tokenizer]
  s.push_back(field("tokenizer", "type", &C::tokenizer, &K::type,
                    "GPT-NeoX's tokenizer_type: HFTokenizer (a Hugging Face tokenizer.json), "
                    "GPT2BPETokenizer (vocab.json + merges.txt), CharLevelTokenizer, byte; or the name of a "
                    "`tokenizer` plugin, which gets vocab_file and merge_file with its [plugins.options.<name>] "
                    "table; empty: none.")
                  .values("a built-in type, a plugin name (`[a-z0-9-]+`) or empty"));
  s.push_back(field("tokenizer", "vocab_file", &C::tokenizer, &K::vocab_file,
                    "HFTokenizer: the tokenizer.json; GPT2BPETokenizer: the vocab.json; a plugin: the file it "
                    "reads. Relative to the config file's directory (on the command line: to the working "
                    "directory)."));
  s.push_back(field("tokenizer", "merge_file", &C::tokenizer, &K::merge_file,
                    "GPT2BPETokenizer: the merges.txt; a plugin: a second file it reads. Relative as vocab_file."));
  return s;
}

const std::vector<KeyDef>& schema() {
  static const std::vector<KeyDef> s = build_schema();
  return s;
}

struct TableDef {
  const char* name;
  const char* doc;
};

const std::vector<TableDef>& tables() {
  static const std::vector<TableDef> t = {
      {"plugins", "Which plugin fills each slot, and where plugins are looked for."},
      {"model", "The GPT-NeoX model (names and defaults as in GPT-NeoX's configs)."},
      {"optimizer", "Optimizer, learning-rate schedule and gradient clipping."},
      {"training", "Batch sizes, length of the run, evaluation, logging and checkpoints."},
      {"tokenizer",
       "The tokenizer of the run's text (GPT-NeoX's tokenizer_type, vocab_file and merge_file). "
       "`neox train` checks it against the vocabulary and copies its files into every checkpoint, "
       "where `neox generate` and `neox convert` find them."},
  };
  return t;
}

std::string known_tables() {
  std::string out;
  for (auto& t : tables()) out += (out.empty() ? "" : ", ") + std::string("[") + t.name + "]";
  return out;
}

const KeyDef* find_key(std::string_view table, std::string_view key) {
  for (auto& d : schema())
    if (d.table == table && d.key == key) return &d;
  return nullptr;
}

bool is_table_name(std::string_view name) {
  for (auto& t : tables())
    if (name == t.name) return true;
  return false;
}

bool is_kernel_op(std::string_view op) {
  for (auto n : kernel_op_names())
    if (n == op) return true;
  return false;
}

bool valid_plugin_name(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
  return true;
}

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// " (did you mean 'x'?)" for the nearest candidate, or "".
std::string suggest(std::string_view name, const std::vector<std::string>& candidates) {
  std::string normalized(name);
  std::replace(normalized.begin(), normalized.end(), '-', '_');
  std::string best;
  size_t best_d = std::string::npos;
  for (auto& c : candidates) {
    size_t d = edit_distance(normalized, c);
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  size_t limit = std::max<size_t>(2, normalized.size() / 4);
  if (best.empty() || best_d > limit) return "";
  return " (did you mean '" + best + "'?)";
}

std::vector<std::string> keys_of(std::string_view table) {
  std::vector<std::string> out;
  for (auto& d : schema())
    if (d.table == table) out.push_back(d.key);
  return out;
}

// Checks `v` against `d`; on success returns "" and leaves in `v` the value to
// set (an integer converted to float where a float is expected).
std::string check_value(const KeyDef& d, Value& v) {
  switch (d.type) {
    case Type::Bool:
      if (!std::holds_alternative<bool>(v)) return wrong_type(d.type, v);
      return "";
    case Type::Int: {
      // A whole number written as a float (5e8: DeepSpeed and GPT-NeoX
      // configs write bucket sizes so) is that integer; 1.5 is not.
      if (auto* f = std::get_if<double>(&v); f && std::isfinite(*f) && *f == std::trunc(*f) && std::abs(*f) < 9.0e18)
        v = static_cast<std::int64_t>(*f);
      auto* i = std::get_if<std::int64_t>(&v);
      if (!i) return wrong_type(d.type, v);
      if (*i < d.imin || *i > d.imax)
        return std::to_string(*i) + " is out of range [" + std::to_string(d.imin) + ", " + std::to_string(d.imax) + "]";
      return "";
    }
    case Type::Float:
    case Type::FloatPair: {
      std::vector<double> xs;
      if (d.type == Type::Float) {
        if (auto* i = std::get_if<std::int64_t>(&v)) v = static_cast<double>(*i);
        if (!std::holds_alternative<double>(v)) return wrong_type(d.type, v);
        xs.push_back(std::get<double>(v));
      } else {
        auto* a = std::get_if<std::vector<double>>(&v);
        if (!a || a->size() != 2) return wrong_type(d.type, v);
        xs = *a;
      }
      for (double x : xs) {
        bool lo_ok = d.fmin_open ? x > d.fmin : x >= d.fmin;
        bool hi_ok = d.fmax_open ? x < d.fmax : x <= d.fmax;
        if (!(lo_ok && hi_ok))  // NaN fails both
          return format_double(x) + " is out of range " + (d.fmin_open ? "(" : "[") + format_double(d.fmin) + ", " +
                 format_double(d.fmax) + (d.fmax_open ? ")" : "]");
      }
      return "";
    }
    case Type::String: {
      auto* s = std::get_if<std::string>(&v);
      if (!s) return wrong_type(d.type, v);
      if (!d.allowed.empty() && std::find(d.allowed.begin(), d.allowed.end(), *s) == d.allowed.end()) {
        std::string list;
        for (auto& a : d.allowed) list += (list.empty() ? "" : ", ") + a;
        return quote(*s) + " is not one of: " + list + suggest(*s, d.allowed);
      }
      if (d.plugin_name) {
        if (s->empty() && !d.allow_empty) return "a plugin name is required";
        if (!s->empty() && !valid_plugin_name(*s))
          return quote(*s) + " is not a plugin name (lowercase letters, digits and '-')";
      }
      return "";
    }
    case Type::StringArray:
      if (!std::holds_alternative<std::vector<std::string>>(v)) return wrong_type(d.type, v);
      return "";
  }
  return "";
}

// ---------------------------------------------------------------------------
// Applying values, collecting errors

struct Problem {
  SourceLocation where;
  std::string message;  // "<table>.<key>: <problem>"
};

class Loader {
 public:
  Loader(Config& cfg, std::string source, std::filesystem::path base_dir)
      : cfg_(cfg), source_(std::move(source)), base_dir_(std::move(base_dir)) {}

  SourceLocation at(const toml::source_region& r) const {
    SourceLocation l;
    l.file = source_;
    l.line = static_cast<int>(r.begin.line);
    l.column = static_cast<int>(r.begin.column);
    return l;
  }
  SourceLocation file_only() const {
    SourceLocation l;
    l.file = source_;
    return l;
  }

  void error(SourceLocation where, std::string message) {
    problems_.push_back(Problem{std::move(where), std::move(message)});
  }
  bool ok() const { return problems_.empty(); }

  // Throws one neox::Error listing every problem, in source order.
  void throw_if_failed() {
    if (problems_.empty()) return;
    std::stable_sort(problems_.begin(), problems_.end(), [](const Problem& a, const Problem& b) {
      return std::pair(a.where.line, a.where.column) < std::pair(b.where.line, b.where.column);
    });
    std::string msg;
    const size_t kMax = 20;
    for (size_t i = 0; i < problems_.size() && i < kMax; ++i)
      msg += (i ? "\n" : "") + problems_[i].where.str() + ": " + problems_[i].message;
    if (problems_.size() > kMax) msg += "\n(" + std::to_string(problems_.size() - kMax) + " more errors)";
    problems_.clear();
    throw Error(msg);
  }

  // A schema key: check, then set, and remember where it was set.
  void apply(const KeyDef& d, Value v, const SourceLocation& where, bool from_file) {
    std::string problem = check_value(d, v);
    if (!problem.empty()) return error(where, d.dotted() + ": " + problem);
    if (d.key == "search_paths" && from_file) {
      for (auto& p : std::get<std::vector<std::string>>(v)) {
        std::filesystem::path path(p);
        if (path.is_relative()) p = (base_dir_ / path).lexically_normal().string();
      }
    }
    if (d.table == "tokenizer" && (d.key == "vocab_file" || d.key == "merge_file") && from_file) {
      auto& p = std::get<std::string>(v);
      if (!p.empty() && std::filesystem::path(p).is_relative()) p = (base_dir_ / p).lexically_normal().string();
    }
    d.set(cfg_, v);
    set_at_[d.dotted()] = where;
  }

  void apply_kernel(const std::string& op, const Value& v, const SourceLocation& where) {
    std::string name = "plugins.kernels." + op;
    if (!is_kernel_op(op)) {
      std::vector<std::string> ops(kernel_op_names().begin(), kernel_op_names().end());
      std::string list;
      for (auto& o : ops) list += (list.empty() ? "" : ", ") + o;
      return error(where, name + ": unknown kernel operation" + suggest(op, ops) + " (known: " + list + ")");
    }
    auto* s = std::get_if<std::string>(&v);
    if (!s) return error(where, name + ": " + wrong_type(Type::String, v) + " naming the kernels plugin");
    if (!valid_plugin_name(*s))
      return error(where, name + ": " + quote(*s) + " is not a plugin name (lowercase letters, digits and '-')");
    cfg_.plugins.kernels[op] = *s;
  }

  void apply_plugin_option(const std::string& plugin, const std::string& key, const Value& v,
                           const SourceLocation& where) {
    std::string table = "plugins.options." + plugin;
    if (std::holds_alternative<std::vector<double>>(v))
      return error(where, table + "." + key + ": arrays in plugin options must hold strings");
    Options::Value ov;
    std::visit(
        [&](auto&& x) {
          using X = std::decay_t<decltype(x)>;
          if constexpr (!std::is_same_v<X, std::vector<double>>) ov = x;
        },
        v);
    auto it = cfg_.plugins.options.find(plugin);
    if (it == cfg_.plugins.options.end()) it = cfg_.plugins.options.emplace(plugin, Options(table)).first;
    it->second.set(key, std::move(ov), where);
  }

  // --- the file ---

  void document(const toml::table& doc) {
    for (auto&& [k, node] : doc) {
      std::string name(k.str());
      SourceLocation where = at(k.source());
      if (!is_table_name(name)) {
        std::vector<std::string> names;
        for (auto& t : tables()) names.push_back(t.name);
        if (node.is_table())
          error(where, name + ": unknown table" + suggest(name, names) + " (known tables: " + known_tables() + ")");
        else
          error(where, name + ": unknown top-level key; settings belong in one of the tables " + known_tables());
        continue;
      }
      const toml::table* t = node.as_table();
      if (!t) {
        error(where, name + ": expected a table, got " + node_kind(node));
        continue;
      }
      for (auto&& [kk, value] : *t) {
        std::string key(kk.str());
        if (name == "plugins" && key == "kernels") {
          kernels_table(value, at(kk.source()));
          continue;
        }
        if (name == "plugins" && key == "options") {
          options_table(value, at(kk.source()));
          continue;
        }
        schema_key(name, key, value, at(kk.source()));
      }
    }
    // betas and beta1/beta2 set the same settings: one form per file.
    if (set_at_.count("optimizer.betas") && (set_at_.count("optimizer.beta1") || set_at_.count("optimizer.beta2")))
      error(set_at_["optimizer.betas"], "optimizer.betas: give either betas or beta1/beta2, not both");
  }

  // Keys earlier versions had, which every checkpoint's config.toml of
  // theirs holds (config_to_toml writes every key): accepted where the old
  // value means what a current key says, refused naming the replacement
  // otherwise. plugins.tokenizer named a tokenizer plugin that nothing
  // made; [tokenizer] type names built-in tokenizers and plugins now.
  bool retired_key(const std::string& table, const std::string& key, const Value& v, const SourceLocation& where) {
    if (table != "plugins" || key != "tokenizer") return false;
    const auto* name = std::get_if<std::string>(&v);
    if (name && name->empty()) return true;
    if (name && *name == "byte") {
      retired_byte_tokenizer_ = true;
      return true;
    }
    error(where,
          "plugins.tokenizer: retired; name the tokenizer in [tokenizer] type (a built-in type or a "
          "tokenizer plugin), e.g. [tokenizer] type = \"byte\"");
    return true;
  }

  void schema_key(const std::string& table, const std::string& key, const toml::node& value,
                  const SourceLocation& key_where) {
    const KeyDef* d = find_key(table, key);
    if (!d) {
      std::string retired_problem;
      if (auto v = to_value(value, retired_problem); v && retired_key(table, key, *v, at(value.source()))) return;
      std::vector<std::string> known = keys_of(table);
      if (table == "plugins") {
        known.push_back("kernels");
        known.push_back("options");
      }
      std::string list;
      for (auto& k : known) list += (list.empty() ? "" : ", ") + k;
      return error(key_where, table + "." + key + ": unknown key" + suggest(key, known) + " (known: " + list + ")");
    }
    SourceLocation where = at(value.source());
    if (where.line == 0) where = key_where;
    if (value.is_table())
      return error(where,
                   d->dotted() + ": expected " + type_article(d->type) + " " + type_name(d->type) + ", got a table");
    std::string problem;
    auto v = to_value(value, problem);
    if (!v) return error(where, d->dotted() + ": " + problem);
    apply(*d, std::move(*v), where, true);
  }

  void kernels_table(const toml::node& node, const SourceLocation& where) {
    const toml::table* t = node.as_table();
    if (!t) return error(where, "plugins.kernels: expected a table of op = \"plugin\", got " + node_kind(node));
    for (auto&& [k, value] : *t) {
      std::string op(k.str());
      std::string problem;
      auto v = to_value(value, problem);
      if (!v) {
        error(at(k.source()), "plugins.kernels." + op + ": " + problem);
        continue;
      }
      apply_kernel(op, *v, at(k.source()));
    }
  }

  void options_table(const toml::node& node, const SourceLocation& where) {
    const toml::table* t = node.as_table();
    if (!t) return error(where, "plugins.options: expected tables [plugins.options.<plugin>], got " + node_kind(node));
    for (auto&& [k, sub] : *t) {
      std::string plugin(k.str());
      SourceLocation pw = at(k.source());
      std::string table = "plugins.options." + plugin;
      if (!valid_plugin_name(plugin)) {
        error(pw, table + ": " + quote(plugin) + " is not a plugin name (lowercase letters, digits and '-')");
        continue;
      }
      const toml::table* opts = sub.as_table();
      if (!opts) {
        error(pw, table + ": expected a table of options for plugin '" + plugin + "', got " + node_kind(sub));
        continue;
      }
      // An empty table still records that the plugin was configured.
      if (!cfg_.plugins.options.count(plugin)) cfg_.plugins.options.emplace(plugin, Options(table));
      for (auto&& [ok, value] : *opts) {
        std::string key(ok.str());
        SourceLocation kw = at(ok.source());
        if (value.is_table()) {
          error(kw, table + "." + key + ": nested tables are not allowed in plugin options");
          continue;
        }
        std::string problem;
        auto v = to_value(value, problem);
        if (!v) {
          error(kw, table + "." + key + ": " + problem);
          continue;
        }
        apply_plugin_option(plugin, key, *v, kw);
      }
    }
  }

  // --- overrides: "dotted.key=value" ---

  void override_one(const std::string& text) {
    SourceLocation cl;  // "<command line>"
    auto eq = text.find('=');
    if (eq == std::string::npos) return error(cl, quote(text) + ": expected table.key=value");
    std::string key = trim(text.substr(0, eq));
    std::string raw = trim(text.substr(eq + 1));
    std::vector<std::string> parts;
    {
      size_t start = 0;
      while (true) {
        size_t dot = key.find('.', start);
        parts.push_back(key.substr(start, dot - start));
        if (dot == std::string::npos) break;
        start = dot + 1;
      }
    }
    for (auto& p : parts)
      if (p.empty()) return error(cl, quote(key) + ": expected table.key=value");

    Value v = parse_override_value(raw);

    if (parts[0] == "plugins" && parts.size() >= 2 && parts[1] == "kernels") {
      if (parts.size() != 3) return error(cl, key + ": expected plugins.kernels.<op>=<plugin>");
      return apply_kernel(parts[2], v, cl);
    }
    if (parts[0] == "plugins" && parts.size() >= 2 && parts[1] == "options") {
      if (parts.size() != 4) return error(cl, key + ": expected plugins.options.<plugin>.<key>=<value>");
      if (!valid_plugin_name(parts[2]))
        return error(cl, key + ": " + quote(parts[2]) + " is not a plugin name (lowercase letters, digits and '-')");
      return apply_plugin_option(parts[2], parts[3], v, cl);
    }
    if (!is_table_name(parts[0])) {
      std::vector<std::string> names;
      for (auto& t : tables()) names.push_back(t.name);
      return error(cl, key + ": unknown table '" + parts[0] + "'" + suggest(parts[0], names) +
                           " (known tables: " + known_tables() + ")");
    }
    if (parts.size() != 2) return error(cl, key + ": expected " + parts[0] + ".<key>=<value>");
    const KeyDef* d = find_key(parts[0], parts[1]);
    if (!d) {
      if (retired_key(parts[0], parts[1], v, cl)) return;
      std::vector<std::string> known = keys_of(parts[0]);
      return error(cl, key + ": unknown key" + suggest(parts[1], known));
    }
    apply(*d, std::move(v), cl, false);
  }

  // The value as TOML ("2", "1e-3", "true", "[0.9, 0.95]", "\"x\""); anything
  // that is not a single TOML value is taken as a bare string.
  static Value parse_override_value(const std::string& raw) {
    try {
      toml::table t = toml::parse("x = " + raw + "\n", std::string_view("<command line>"));
      if (t.size() == 1) {
        if (const toml::node* n = t.get("x")) {
          std::string problem;
          if (auto v = to_value(*n, problem)) return *v;
        }
      }
    } catch (const toml::parse_error&) {
    } catch (const toml_check::Failed&) {
    }
    return Value{raw};
  }

  static std::string trim(const std::string& s) {
    size_t a = s.find_first_not_of(" \t\r\n");
    if (a == std::string::npos) return "";
    size_t b = s.find_last_not_of(" \t\r\n");
    return s.substr(a, b - a + 1);
  }

  // --- checks across keys ---

  SourceLocation where_set(std::initializer_list<const char*> keys) const {
    for (const char* k : keys) {
      auto it = set_at_.find(k);
      if (it != set_at_.end()) return it->second;
    }
    return file_only();
  }

  void cross_checks() {
    const ModelConfig& m = cfg_.model;
    if (m.hidden_size % m.num_attention_heads != 0)
      error(where_set({"model.num_attention_heads", "model.hidden_size"}),
            "model.num_attention_heads: hidden_size " + std::to_string(m.hidden_size) +
                " is not divisible by num_attention_heads " + std::to_string(m.num_attention_heads));
    else if (m.pos_emb == "rotary") {
      auto rotary_dims = static_cast<std::int64_t>(static_cast<double>(m.head_size()) * m.rotary_pct);
      if (rotary_dims < 2 || rotary_dims % 2 != 0)
        error(where_set({"model.rotary_pct", "model.hidden_size", "model.num_attention_heads"}),
              "model.rotary_pct: int(head_size " + std::to_string(m.head_size()) + " * rotary_pct " +
                  format_double(m.rotary_pct) + ") = " + std::to_string(rotary_dims) +
                  " rotary dimensions; must be even and >= 2");
    }
    if (m.seq_length > m.max_position_embeddings)
      error(where_set({"model.seq_length", "model.max_position_embeddings"}),
            "model.seq_length: " + std::to_string(m.seq_length) + " exceeds max_position_embeddings " +
                std::to_string(m.max_position_embeddings));
    TokenizerConfig& t = cfg_.tokenizer;
    if (retired_byte_tokenizer_ && t.type.empty()) t.type = "byte";
    if (!t.type.empty() && !is_builtin_tokenizer(t.type) && !valid_plugin_name(t.type)) {
      std::string known;
      for (const auto& type : tokenizer_types()) known += (known.empty() ? "" : ", ") + type;
      error(where_set({"tokenizer.type"}), "tokenizer.type: " + quote(t.type) + " is neither a built-in tokenizer (" +
                                               known +
                                               ") nor the name of a tokenizer plugin (lowercase letters, "
                                               "digits and '-')");
    }
    const bool plugin = !t.type.empty() && !is_builtin_tokenizer(t.type);
    const bool needs_vocab = t.type == "HFTokenizer" || t.type == "GPT2BPETokenizer";
    if (needs_vocab && t.vocab_file.empty())
      error(where_set({"tokenizer.type"}),
            "tokenizer.vocab_file: tokenizer.type \"" + t.type + "\" needs a vocab file (" +
                (t.type == "HFTokenizer" ? "the tokenizer.json" : "the vocab.json") + ")");
    if (t.type == "GPT2BPETokenizer" && t.merge_file.empty())
      error(where_set({"tokenizer.type"}),
            "tokenizer.merge_file: tokenizer.type \"GPT2BPETokenizer\" needs a merge file (the merges.txt)");
    if (!needs_vocab && !plugin && !t.vocab_file.empty())
      error(where_set({"tokenizer.vocab_file"}),
            "tokenizer.vocab_file: " + (t.type.empty() ? std::string("set, but tokenizer.type is empty")
                                                       : "tokenizer.type \"" + t.type + "\" takes no vocab file"));
    if (t.type != "GPT2BPETokenizer" && !plugin && !t.merge_file.empty())
      error(where_set({"tokenizer.merge_file"}),
            "tokenizer.merge_file: only tokenizer.type \"GPT2BPETokenizer\" takes a merge file among the built-in "
            "tokenizers");
  }

 private:
  Config& cfg_;
  std::string source_;
  std::filesystem::path base_dir_;
  std::vector<Problem> problems_;
  std::map<std::string, SourceLocation> set_at_;
  bool retired_byte_tokenizer_ = false;  // plugins.tokenizer = "byte" (retired_key)
};

// Where TOML++ 3.3 trips its own check (see toml_check above): the first line
// that starts a table header "[" or "[[" without a key after it. Line 0 if none.
SourceLocation nameless_header(std::string_view text) {
  SourceLocation l;
  int line = 1;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view s = text.substr(pos, end - pos);
    size_t i = s.find_first_not_of(" \t");
    if (i != std::string_view::npos && s[i] == '[') {
      size_t j = i + 1;
      if (j < s.size() && s[j] == '[') ++j;
      while (j < s.size() && (s[j] == ' ' || s[j] == '\t')) ++j;
      char c = j < s.size() ? s[j] : '\n';
      bool key_start = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
                       c == '-' || c == '"' || c == '\'';
      if (!key_start) {
        l.line = line;
        l.column = static_cast<int>(j) + 1;
        return l;
      }
    }
    pos = end + 1;
    ++line;
  }
  return l;
}

Config parse_impl(std::string_view text, const std::string& source_name, const std::vector<std::string>& overrides) {
  std::string source = source_name.empty() ? "<config>" : source_name;
  Config cfg;
  cfg.path = source_name;
  Loader loader(cfg, source, std::filesystem::path(source_name).parent_path());

  toml::table doc;
  try {
    doc = toml::parse(text, std::string_view(source));
  } catch (const toml_check::Failed& f) {
    SourceLocation l = nameless_header(text);
    l.file = source;
    std::string what = l.line > 0 ? "expected a table name after '['" : "rejected by the parser";
    throw Error(l.str() + ": malformed TOML: " + what + " (TOML++ check '" + f.expr + "' failed)");
  } catch (const toml::parse_error& e) {
    SourceLocation l;
    l.file = source;
    l.line = static_cast<int>(e.source().begin.line);
    l.column = static_cast<int>(e.source().begin.column);
    throw Error(l.str() + ": " + std::string(e.description()));
  }
  loader.document(doc);
  loader.throw_if_failed();
  for (auto& o : overrides) loader.override_one(o);
  loader.throw_if_failed();
  loader.cross_checks();
  loader.throw_if_failed();
  try {
    cfg.model.validate();
  } catch (const Error& e) {
    throw Error(source + ": " + e.what());
  }
  return cfg;
}

// ---------------------------------------------------------------------------
// The reference

std::string allowed_text(const KeyDef& d) {
  if (!d.values_doc.empty()) return d.values_doc;
  switch (d.type) {
    case Type::Bool:
      return "`true`, `false`";
    case Type::Int:
      if (d.imax == kI64Max) return ">= " + std::to_string(d.imin);
      return "[" + std::to_string(d.imin) + ", " + std::to_string(d.imax) + "]";
    case Type::Float:
    case Type::FloatPair: {
      std::string r = std::string(d.fmin_open ? "(" : "[") + format_double(d.fmin) + ", " + format_double(d.fmax) +
                      (d.fmax_open ? ")" : "]");
      return d.type == Type::FloatPair ? "each in " + r : r;
    }
    case Type::String: {
      if (!d.allowed.empty()) {
        std::string out;
        for (auto& a : d.allowed) {
          if (!out.empty()) out += ", ";
          out.append("`").append(a).append("`");
        }
        return out;
      }
      if (d.plugin_name) return d.allow_empty ? "plugin name (`[a-z0-9-]+`) or empty" : "plugin name (`[a-z0-9-]+`)";
      return "any";
    }
    case Type::StringArray:
      return "paths";
  }
  return "";
}

}  // namespace

Config parse_config(std::string_view toml_text, const std::string& source_name,
                    const std::vector<std::string>& overrides) {
  return parse_impl(toml_text, source_name, overrides);
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open config file");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw Error(path + ": cannot read config file");
  return parse_impl(ss.str(), path, overrides);
}

std::string config_to_toml(const Config& config) {
  std::ostringstream out;
  for (auto& t : tables()) {
    out << (out.tellp() > 0 ? "\n" : "") << "[" << t.name << "]\n";
    for (auto& d : schema()) {
      if (d.table != t.name || d.key == "betas") continue;  // beta1/beta2 carry it
      out << d.key << " = " << format_value(d.get(config)) << "\n";
    }
    if (std::string_view(t.name) != "plugins") continue;
    if (!config.plugins.kernels.empty()) {
      out << "\n[plugins.kernels]\n";
      for (auto& [op, plugin] : config.plugins.kernels) out << op << " = " << quote(plugin) << "\n";
    }
    for (auto& [plugin, options] : config.plugins.options) {
      out << "\n[plugins.options." << plugin << "]\n";
      for (auto& key : options.keys()) {
        Options::Value v = options.raw(key);
        Value value;
        std::visit([&](auto&& x) { value = x; }, v);
        out << key << " = " << format_value(value) << "\n";
      }
    }
  }
  return out.str();
}

std::string config_reference_markdown() {
  const Config defaults;
  std::ostringstream md;
  md << "<!-- Generated from the schema in core/src/train/config.cpp; do not edit by hand.\n"
        "     Regenerate with: neox config --reference > configs/README.md\n"
        "     (tests/unit/test_config.cpp fails when this file and the schema differ.) -->\n\n"
        "# Configuration reference\n\n"
        "A neox run is described by one TOML file: the plugin manifest and the run's "
        "settings. The `*.toml` files in this directory are ready-made configs.\n\n"
        "Every key is checked against the schema below. An unknown table or key, a value of "
        "the wrong type (an integer is accepted where a float is expected, not the other "
        "way round), a value out of range or not among the allowed ones is an error naming "
        "the file, line, column and key:\n\n"
        "```\n"
        "my-run.toml:12:15: model.hidden_size: 0 is out of range [1, 65536]\n"
        "```\n\n"
        "A key that is absent takes the default shown. After the keys, settings are checked "
        "against each other (`hidden_size` divisible by `num_attention_heads`, an even "
        "number of rotary dimensions, `seq_length` <= `max_position_embeddings`), then by "
        "the model itself.\n\n"
        "Overrides of the form `table.key=value` (`--set table.key=value` on the `neox` "
        "command line) are applied after the file and checked the same way; `neox config "
        "--check FILE` validates a file. The value is read as TOML (`2`, `1e-3`, "
        "`true`, `[\"a\", \"b\"]`); anything else is taken as a bare string "
        "(`plugins.backend=cpu`). Examples: `model.hidden_size=512`, `optimizer.lr=1e-3`, "
        "`plugins.kernels.matmul=my-kernels`, `plugins.options.cpu.threads=2`.\n";

  for (auto& t : tables()) {
    md << "\n## [" << t.name << "]\n\n" << t.doc << "\n\n";
    md << "| key | type | default | allowed | meaning |\n";
    md << "|-----|------|---------|---------|---------|\n";
    for (auto& d : schema()) {
      if (d.table != t.name) continue;
      md << "| `" << d.key << "` | " << type_name(d.type) << " | `" << format_value(d.get(defaults)) << "` | "
         << allowed_text(d) << " | " << d.doc << " |\n";
    }
    if (std::string_view(t.name) == "plugins") {
      md << "\n## [plugins.kernels]\n\n"
            "Per-operation kernel overrides, `op = \"plugin\"`: the named `kernels` plugin's "
            "implementation replaces the backend's for that operation (for A/B kernel "
            "benchmarks). Empty by default. Operations:\n";
      std::string ops;
      for (auto n : kernel_op_names()) {
        if (!ops.empty()) ops += ", ";
        ops.append("`").append(n).append("`");
      }
      md << ops << ".\n";
      md << "\n## [plugins.options.\\<plugin\\>]\n\n"
            "Options for the plugin named `<plugin>`, passed to it as they are: booleans, "
            "integers, floats, strings and arrays of strings (nested tables are an error). "
            "Each plugin checks its own keys when it is created, so a misspelt option is "
            "reported with its file and line then. Example:\n\n"
            "```toml\n"
            "[plugins.options.cpu]\n"
            "threads = 2\n"
            "```\n";
    }
  }
  return md.str();
}

}  // namespace neox
