// SPDX-License-Identifier: Apache-2.0
// neox bench op NAME --a PROVIDER --b PROVIDER [--dtype f32|bf16|f16]
//                    [--size S] [--runs N] [--warmup N] [--l2-mb MB] [--config FILE]
//
// Compares two providers of one kernel op. A provider is a backend plugin
// (cpu, cuda: its own kernel) or a `kernels` plugin, which is swapped into a
// backend of its device exactly as the manifest's [plugins.kernels] would do
// it (PluginRegistry::make_backend(backend, {{op, provider}}, options)).
//
// Each op has one realistic shape (the table in op_spec(), at --size 1),
// whose rows (tokens) --size scales. What the arguments are (their names,
// order, dtype roles, which are written) and the op's FLOPs and bytes come
// from the SDK's op table (neox/kernel_contract.h), shared with the op
// profiler; op_spec() holds only the benchmark's shapes and values. Random
// inputs, the same for every provider, are rounded to --dtype; each provider
// first runs the op once and its outputs are compared with the cpu backend's
// f32 result on the same values; then the op is timed with
// Backend::time_runs over enough copies of its arguments that one pass over
// them exceeds the L2 cache (--l2-mb), one copy per run in turn, so that no
// run finds its inputs in cache.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "commands.h"
#include "neox/backend.h"
#include "neox/dtype.h"
#include "neox/error.h"
#include "neox/kernel_contract.h"
#include "neox/kernels.h"
#include "neox/plugin.h"
#include "neox/registry.h"

namespace neox::app {

namespace {

// ---------------------------------------------------------------- op table

// The benchmark's settings of one Tensor argument; its role and access are the table's.
struct ArgSpec {
  std::string name;  // the table's name of the argument (checked: spec_matches_table)
  Shape shape;
  double lo = -1.0, hi = 1.0;                  // random values in [lo, hi) (floats); ids in [0, hi) (i32)
  bool zero = false;                           // starts at zero instead (accumulated gradients)
  std::optional<DType> native = std::nullopt;  // a `native` argument's dtype (default: --dtype)
};

struct OpSpec {
  std::vector<ArgSpec> args;  // in the op's argument order
  // Calls the op on one set of arguments; returns the reduction's value (else 0).
  std::function<double(Kernels&, std::vector<Tensor>&)> call;
  // Fills inputs derived from others (saved statistics of a forward) with
  // the cpu kernels, on host f32 tensors of the arguments.
  std::function<void(Kernels&, std::vector<Tensor>&)> prepare;
  bool returns_value = false;  // sum, sum_squares
};

std::int64_t scaled(double n, double size) { return std::max<std::int64_t>(1, std::llround(n * size)); }

// Tokens `tokens` at size 1 as [B, T] with T at most t_max.
std::pair<std::int64_t, std::int64_t> batch_of(double tokens, std::int64_t t_max, double size) {
  const std::int64_t n = scaled(tokens, size);
  const std::int64_t T = std::min(t_max, n);
  return {std::max<std::int64_t>(1, n / T), T};
}

OpSpec op_spec(const std::string& op, double size) {
  OpSpec s;
  // Rows x hidden of the elementwise and normalisation ops (a 1.3B model's
  // micro-batch of 4 x 2048 tokens); attention as GPT-2 small / Pythia-160M.
  const std::int64_t R = scaled(8192, size), C = 2048;
  const std::int64_t H = 12, hs = 64, CA = H * hs;
  const std::int64_t V = 50304;
  if (op == "matmul") {
    // M = N = K, 2048 at size 1: the flops scale with size.
    const std::int64_t n = std::max<std::int64_t>(8, (std::llround(2048 * std::cbrt(size)) + 7) / 8 * 8);
    s.args = {{"c", {n, n}}, {"a", {n, n}}, {"b", {n, n}}};
    s.call = [](Kernels& k, std::vector<Tensor>& t) {
      k.matmul(t[0], t[1], t[2], false, false, 1.0f, 0.0f);
      return 0.0;
    };
  } else if (op == "add_bias") {
    s.args = {{"out", {R, C}}, {"bias", {C}}};
    s.call = [](Kernels& k, std::vector<Tensor>& t) { return k.add_bias(t[0], t[1]), 0.0; };
  } else if (op == "bias_backward") {
    s.args = {{"dbias", {C}, 0, 0, true}, {"dout", {R, C}}};
    s.call = [](Kernels& k, std::vector<Tensor>& t) { return k.bias_backward(t[0], t[1]), 0.0; };
  } else if (op == "layernorm_forward") {
    s.args = {{"out", {R, C}}, {"mean", {R}}, {"rstd", {R}}, {"inp", {R, C}, -2, 3}, {"weight", {C}}, {"bias", {C}}};
    s.call = [](Kernels& k, std::vector<Tensor>& t) {
      return k.layernorm_forward(t[0], t[1], t[2], t[3], t[4], t[5], 1e-5f), 0.0;
    };
  } else if (op == "layernorm_backward") {
    s.args = {{"dinp", {R, C}, 0, 0, true},
              {"dweight", {C}, 0, 0, true},
              {"dbias", {C}, 0, 0, true},
              {"dout", {R, C}},
              {"inp", {R, C}, -2, 3},
              {"weight", {C}},
              {"mean", {R}},
              {"rstd", {R}}};
    s.prepare = [R, C](Kernels& k, std::vector<Tensor>& t) {  // mean, rstd of inp
      Tensor o = Tensor::empty(nullptr, {R, C}, DType::f32), b = Tensor::zeros_host({C}, DType::f32);
      k.layernorm_forward(o, t[6], t[7], t[4], t[5], b, 1e-5f);
    };
    s.call = [](Kernels& k, std::vector<Tensor>& t) {
      return k.layernorm_backward(t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7]), 0.0;
    };
  } else if (op == "gelu_forward") {
    s.args = {{"out", {R, C}}, {"inp", {R, C}, -4, 4}};
    s.call = [](Kernels& k, std::vector<Tensor>& t) { return k.gelu_forward(t[0], t[1]), 0.0; };
  } else if (op == "gelu_backward") {
    s.args = {{"dinp", {R, C}}, {"inp", {R, C}, -4, 4}, {"dout", {R, C}}};
    s.call = [](Kernels& k, std::vector<Tensor>& t) { return k.gelu_backward(t[0], t[1], t[2]), 0.0; };
  } else if (op == "rotary_forward" || op == "rotary_backward") {
    auto [B, T] = batch_of(4 * 1024, 1024, size);
    s.args = {{op == "rotary_forward" ? "qkv" : "dqkv", {B, T, 3 * CA}}};
    const bool fwd = op == "rotary_forward";
    s.call = [fwd, H](Kernels& k, std::vector<Tensor>& t) {  // Pythia: rotary on 1/4 of each head
      if (fwd)
        k.rotary_forward(t[0], static_cast<int>(H), 16, 10000.0f, 0);
      else
        k.rotary_backward(t[0], static_cast<int>(H), 16, 10000.0f, 0);
      return 0.0;
    };
  } else if (op == "attention_forward" || op == "attention_backward") {
    auto [B, T] = batch_of(4 * 1024, 1024, size);
    if (op == "attention_forward") {
      s.args = {{"out", {B, T, CA}}, {"lse", {B, H, T}}, {"qkv", {B, T, 3 * CA}}};
      s.call = [H](Kernels& k, std::vector<Tensor>& t) {
        return k.attention_forward(t[0], t[1], t[2], static_cast<int>(H)), 0.0;
      };
    } else {
      s.args = {{"dqkv", {B, T, 3 * CA}},
                {"dout", {B, T, CA}},
                {"qkv", {B, T, 3 * CA}},
                {"out", {B, T, CA}},
                {"lse", {B, H, T}}};
      s.prepare = [H](Kernels& k, std::vector<Tensor>& t) {  // out, lse of the forward
        k.attention_forward(t[3], t[4], t[2], static_cast<int>(H));
      };
      s.call = [H](Kernels& k, std::vector<Tensor>& t) {
        return k.attention_backward(t[0], t[1], t[2], t[3], t[4], static_cast<int>(H)), 0.0;
      };
    }
  } else if (op == "attention_decode") {
    // One generation step of a batch of 8 with a cache of 2048 positions, full.
    const std::int64_t B = 8, max_t = std::max<std::int64_t>(2, scaled(2048, size));
    s.args = {
        {"out", {B, 1, CA}}, {"k_cache", {B, H, max_t, hs}}, {"v_cache", {B, H, max_t, hs}}, {"qkv", {B, 1, 3 * CA}}};
    s.call = [H, max_t](Kernels& k, std::vector<Tensor>& t) {
      return k.attention_decode(t[0], t[1], t[2], t[3], static_cast<int>(H), max_t - 1), 0.0;
    };
  } else if (op == "cross_entropy_forward") {
    const std::int64_t N = scaled(4096, size);
    s.args = {{"losses", {N}}, {"lse", {N}}, {"logits", {N, V}, -4, 4}, {"targets", {N}, 0, static_cast<double>(V)}};
    s.call = [](Kernels& k, std::vector<Tensor>& t) { return k.cross_entropy_forward(t[0], t[1], t[2], t[3]), 0.0; };
  } else if (op == "cross_entropy_backward") {
    const std::int64_t N = scaled(4096, size);
    s.args = {
        {"dlogits", {N, V}}, {"logits", {N, V}, -4, 4}, {"lse", {N}}, {"targets", {N}, 0, static_cast<double>(V)}};
    s.prepare = [N](Kernels& k, std::vector<Tensor>& t) {  // lse of the forward
      Tensor losses = Tensor::empty(nullptr, {N}, DType::f32);
      k.cross_entropy_forward(losses, t[2], t[1], t[3]);
    };
    const float dloss = 1.0f / static_cast<float>(N);
    s.call = [dloss](Kernels& k, std::vector<Tensor>& t) {
      return k.cross_entropy_backward(t[0], t[1], t[2], t[3], dloss), 0.0;
    };
  } else if (op == "embedding_forward" || op == "embedding_backward") {
    const std::int64_t V_ = std::max<std::int64_t>(64, scaled(V, size));
    if (op == "embedding_forward") {
      s.args = {{"out", {R, C}}, {"ids", {R}, 0, static_cast<double>(V_)}, {"table", {V_, C}}};
      s.call = [](Kernels& k, std::vector<Tensor>& t) { return k.embedding_forward(t[0], t[1], t[2], false), 0.0; };
    } else {
      s.args = {{"dtable", {V_, C}, 0, 0, true}, {"ids", {R}, 0, static_cast<double>(V_)}, {"dout", {R, C}}};
      s.call = [](Kernels& k, std::vector<Tensor>& t) { return k.embedding_backward(t[0], t[1], t[2]), 0.0; };
    }
  } else if (op == "add") {
    s.args = {{"out", {R, C}}, {"a", {R, C}}, {"b", {R, C}}};
    s.call = [](Kernels& k, std::vector<Tensor>& t) { return k.add(t[0], t[1], t[2]), 0.0; };
  } else if (op == "axpby") {
    s.args = {{"y", {R, C}}, {"x", {R, C}}};
    s.call = [](Kernels& k, std::vector<Tensor>& t) { return k.axpby(t[0], t[1], 0.5f, 0.5f), 0.0; };
  } else if (op == "fill") {
    s.args = {{"t", {R, C}}};
    s.call = [](Kernels& k, std::vector<Tensor>& t) { return k.fill(t[0], 0.5f), 0.0; };
  } else if (op == "convert") {
    s.args = {{"out", {R, C}}, {"in", {R, C}, -1, 1, false, DType::f32}};  // f32 -> --dtype
    s.call = [](Kernels& k, std::vector<Tensor>& t) { return k.convert(t[0], t[1]), 0.0; };
  } else if (op == "sum_squares" || op == "sum") {
    s.args = {{"x", {R, C}, -3, 2}};
    const bool squares = op == "sum_squares";
    s.call = [squares](Kernels& k, std::vector<Tensor>& t) { return squares ? k.sum_squares(t[0]) : k.sum(t[0]); };
    s.returns_value = true;
  } else if (op == "adamw_update") {
    const std::int64_t n = scaled(8192.0 * 2048.0, size);
    s.args = {{"param", {n}}, {"grad", {n}}, {"m", {n}, -1e-3, 1e-3}, {"v", {n}, 0, 1e-3}};
    s.call = [](Kernels& k, std::vector<Tensor>& t) {
      AdamWParams p;
      p.lr = 1e-4f;
      p.weight_decay = 0.01f;
      p.step = 10;
      return k.adamw_update(t[0], t[1], t[2], t[3], p), 0.0;
    };
  } else {
    std::string list;
    for (auto name : kernel_op_names()) list += (list.empty() ? "" : ", ") + std::string(name);
    throw Error("bench op: unknown op '" + op + "' (ops: " + list + ")");
  }
  return s;
}

// Throws unless the benchmark's arguments are the table's, in its order.
void spec_matches_table(std::string_view op, const OpSpec& s) {
  const KernelOpInfo& info = kernel_op_info(op);
  std::string table, spec;
  for (const auto& a : info.args) table += (table.empty() ? "" : ", ") + std::string(a.name);
  for (const auto& a : s.args) spec += (spec.empty() ? "" : ", ") + a.name;
  if (table != spec)
    throw Error("bench op: internal error: the arguments of " + std::string(op) + " are (" + spec +
                ") but the SDK's op table (neox/kernel_contract.h) has (" + table + ")");
}

// The dtype argument i has in a run with activations of dtype `act`, by its role.
DType dtype_of(const KernelOpInfo& info, const OpSpec& s, std::size_t i, DType act) {
  switch (info.args[i].role) {
    case ArgRole::f32:
      return DType::f32;
    case ArgRole::index:
      return DType::i32;
    case ArgRole::native:
      return s.args[i].native.value_or(act);
    case ArgRole::activation:
    case ArgRole::product:
      break;
  }
  return act;
}

bool written(const KernelOpInfo& info, std::size_t i) { return info.args[i].access != ArgAccess::read; }

// An op with no activation (adamw_update: master weights and optimizer state) runs in f32 only.
bool f32_only(const KernelOpInfo& info) {
  for (const auto& a : info.args)
    if (a.role != ArgRole::f32 && a.role != ArgRole::index) return false;
  return true;
}

// The call spec.call makes on `args`, recorded instead of run.
template <typename R, typename... Args>
void record_into(std::function<R(Args...)>& fn, KernelCall* call) {
  fn = [call](Args... args) -> R {
    *call = KernelCall(args...);
    return R();
  };
}

KernelCall recorded_call(const OpSpec& s, std::vector<Tensor>& args) {
  KernelCall call;
  Kernels recorder;
#define NEOX_RECORD(name) record_into(recorder.name, &call);
  NEOX_KERNEL_OPS(NEOX_RECORD)
#undef NEOX_RECORD
  s.call(recorder, args);
  return call;
}

// ---------------------------------------------------------------- tensors

// Host values of every argument (f32 values, or ids), rounded to the dtype
// each will have, so that every provider and the reference see the same numbers.
std::vector<std::vector<float>> host_inputs(const KernelOpInfo& info, const OpSpec& s, DType act, Kernels& cpu) {
  std::mt19937 rng(1234);
  std::vector<std::vector<float>> data;
  // The arguments in the dtype of this run's activations, which are rounded to it.
  auto rounded = [&](std::size_t i) { return act != DType::f32 && dtype_of(info, s, i, act) == act; };
  for (std::size_t i = 0; i < s.args.size(); ++i) {
    const ArgSpec& a = s.args[i];
    std::vector<float> v(static_cast<std::size_t>(numel(a.shape)), 0.0f);
    if (info.args[i].role == ArgRole::index) {
      std::uniform_int_distribution<std::int32_t> ids(0, static_cast<std::int32_t>(a.hi) - 1);
      for (auto& x : v) x = static_cast<float>(ids(rng));
    } else if (!a.zero) {
      std::uniform_real_distribution<float> dist(static_cast<float>(a.lo), static_cast<float>(a.hi));
      for (auto& x : v) x = dist(rng);
    }
    data.push_back(std::move(v));
  }
  if (s.prepare) {
    std::vector<std::vector<std::int32_t>> ids(s.args.size());
    std::vector<Tensor> t;
    for (std::size_t i = 0; i < s.args.size(); ++i) {
      if (info.args[i].role == ArgRole::index) {
        ids[i].assign(data[i].begin(), data[i].end());
        t.push_back(Tensor::wrap(ids[i].data(), s.args[i].shape, DType::i32));
      } else {
        t.push_back(Tensor::wrap(data[i].data(), s.args[i].shape, DType::f32));
      }
    }
    // the inputs the derived values come from are rounded first
    for (std::size_t i = 0; i < s.args.size(); ++i)
      if (rounded(i)) {
        Tensor low = Tensor::empty(nullptr, s.args[i].shape, act);
        cpu.convert(low, t[i]);
        cpu.convert(t[i], low);
      }
    s.prepare(cpu, t);
  }
  for (std::size_t i = 0; i < s.args.size(); ++i)
    if (rounded(i)) {
      Tensor f = Tensor::wrap(data[i].data(), s.args[i].shape, DType::f32);
      Tensor low = Tensor::empty(nullptr, s.args[i].shape, act);
      cpu.convert(low, f);
      cpu.convert(f, low);
    }
  return data;
}

// A host tensor of dtype dt holding v (values exactly representable in dt).
Tensor host_tensor(const std::vector<float>& v, const Shape& shape, DType dt) {
  Tensor t = Tensor::empty(nullptr, shape, dt);
  for (std::size_t i = 0; i < v.size(); ++i) switch (dt) {
      case DType::i32:
        t.ptr<std::int32_t>()[i] = static_cast<std::int32_t>(v[i]);
        break;
      case DType::bf16:
        t.ptr<std::uint16_t>()[i] = float_to_bf16(v[i]);
        break;
      case DType::f16:
        t.ptr<std::uint16_t>()[i] = float_to_f16(v[i]);
        break;
      default:
        t.ptr<float>()[i] = v[i];
        break;
    }
  return t;
}

std::vector<double> read_back(Backend& be, const Tensor& t) {
  Tensor h = be.to_host(t);
  be.synchronize();
  std::vector<double> v(static_cast<std::size_t>(h.numel()));
  for (std::size_t i = 0; i < v.size(); ++i) switch (h.dtype()) {
      case DType::bf16:
        v[i] = bf16_to_float(h.ptr<std::uint16_t>()[i]);
        break;
      case DType::f16:
        v[i] = f16_to_float(h.ptr<std::uint16_t>()[i]);
        break;
      default:
        v[i] = h.ptr<float>()[i];
        break;
    }
  return v;
}

std::vector<Tensor> device_set(Backend& be, const KernelOpInfo& info, const OpSpec& s,
                               const std::vector<std::vector<float>>& data, DType act) {
  std::vector<Tensor> set;
  for (std::size_t i = 0; i < s.args.size(); ++i)
    set.push_back(be.to_device(host_tensor(data[i], s.args[i].shape, dtype_of(info, s, i, act))));
  return set;
}

std::vector<Tensor> copy_set(Backend& be, const std::vector<Tensor>& master) {
  std::vector<Tensor> set;
  for (const auto& t : master) {
    Tensor c = Tensor::empty(&be, t.shape(), t.dtype());
    be.copy_tensor(c, t);
    set.push_back(c);
  }
  return set;
}

// What one call produced: every written argument, and the returned value.
struct Result {
  std::vector<std::vector<double>> outputs;
  double value = 0.0;
};

Result run_once(Backend& be, const KernelOpInfo& info, const OpSpec& s, std::vector<Tensor>& set) {
  Result r;
  r.value = s.call(be.kernels, set);
  be.synchronize();
  for (std::size_t i = 0; i < s.args.size(); ++i)
    if (written(info, i)) r.outputs.push_back(read_back(be, set[i]));
  return r;
}

struct Difference {
  double rel = 0.0;      // max over the outputs of ||got - ref|| / ||ref||
  double max_abs = 0.0;  // max over every element
};

Difference difference(const Result& got, const Result& ref, bool value) {
  Difference d;
  auto rel = [](double num, double den) { return den == 0.0 ? std::sqrt(num) : std::sqrt(num / den); };
  if (value) {
    d.max_abs = std::abs(got.value - ref.value);
    d.rel = rel(d.max_abs * d.max_abs, ref.value * ref.value);
  }
  for (std::size_t o = 0; o < got.outputs.size() && o < ref.outputs.size(); ++o) {
    double num = 0.0, den = 0.0;
    for (std::size_t i = 0; i < got.outputs[o].size() && i < ref.outputs[o].size(); ++i) {
      const double e = got.outputs[o][i] - ref.outputs[o][i];
      num += e * e;
      den += ref.outputs[o][i] * ref.outputs[o][i];
      d.max_abs = std::max(d.max_abs, std::abs(e));
      if (std::isnan(e)) d.max_abs = e;
    }
    d.rel = std::max(d.rel, rel(num, den));
    if (std::isnan(num)) d.rel = num;
  }
  return d;
}

// ---------------------------------------------------------------- providers

struct Provider {
  std::string name;     // as given
  std::string backend;  // the backend plugin that runs it
  std::shared_ptr<Backend> be;
};

Provider make_provider(PluginRegistry& registry, const Config& config, const std::string& name, const std::string& op) {
  // By file name only: loading every plugin on the search path to learn what
  // NAME is would load (and could fail on) plugins the comparison never uses.
  const auto backend_names = registry.candidates(PluginKind::backend);
  const auto kernels_names = registry.candidates(PluginKind::kernels);
  auto has = [&](const std::vector<std::string>& names) {
    return std::find(names.begin(), names.end(), name) != names.end();
  };
  auto list = [](const std::vector<std::string>& names) {
    std::string out;
    for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
    return out.empty() ? std::string("none") : out;
  };
  const bool is_backend = has(backend_names), is_kernels = has(kernels_names);
  Provider pr;
  pr.name = name;
  if (is_backend) {
    pr.backend = name;
    pr.be = registry.make_backend(name, {}, config.plugins.options);
  } else if (is_kernels) {
    auto provider = registry.make_kernels(name, config.plugins.options_for(name));
    pr.backend = provider->device() == DeviceType::cuda ? "cuda" : "cpu";
    pr.be = registry.make_backend(pr.backend, {{op, name}}, config.plugins.options);
  } else {
    throw Error("bench op: unknown provider '" + name + "': not a backend plugin (found: " + list(backend_names) +
                ") nor a kernels plugin (found: " + list(kernels_names) +
                "); `neox plugins` lists them and why any was rejected");
  }
  return pr;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  if (v.empty()) return 0.0;
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string shape_list(const KernelOpInfo& info, const OpSpec& s, DType act) {
  std::string out;
  for (std::size_t i = 0; i < s.args.size(); ++i)
    out += (out.empty() ? "" : ", ") + s.args[i].name + " " + std::string(dtype_name(dtype_of(info, s, i, act))) +
           shape_str(s.args[i].shape);
  return out;
}

}  // namespace

int bench_op(const cxxopts::ParseResult& args) {
  if (!args.count("name")) throw Error("bench op: name the op: neox bench op NAME --a PROVIDER --b PROVIDER");
  const std::string op = args["name"].as<std::string>();
  if (!args.count("a") || !args.count("b"))
    throw Error("bench op: --a and --b name the two providers to compare (backend or kernels plugins)");
  const DType act = parse_dtype(args["dtype"].as<std::string>(), "bench op: --dtype");
  if (act != DType::f32 && act != DType::bf16 && act != DType::f16)
    throw Error("bench op: --dtype must be f32, bf16 or f16, not " + std::string(dtype_name(act)));
  const double size = args["size"].as<double>();
  if (!(size > 0.0) || !std::isfinite(size)) throw Error("bench op: --size must be a positive number");
  const int runs = args["runs"].as<int>(), warmup = args["warmup"].as<int>();
  if (runs < 1 || warmup < 0) throw Error("bench op: --runs must be >= 1 and --warmup >= 0");
  const double l2_mb = args["l2-mb"].as<double>();
  if (!(l2_mb >= 0.0)) throw Error("bench op: --l2-mb must be >= 0");

  const OpSpec spec = op_spec(op, size);  // throws for an unknown op, listing them
  // The benchmark's argument lists are the table's: checked for every op, so
  // that any run finds a list gone out of step.
  for (const KernelOpInfo& each : kernel_op_infos())
    spec_matches_table(each.name, op_spec(std::string(each.name), size));
  const KernelOpInfo& info = kernel_op_info(op);
  if (f32_only(info) && act != DType::f32)
    throw Error("bench op: " + op + " is f32 only (master weights and optimizer state); drop --dtype");
  Config config = config_from_args(args);
  auto registry = make_registry(config);
  const std::vector<std::string> names = {args["a"].as<std::string>(), args["b"].as<std::string>()};
  std::vector<Provider> providers;
  for (const auto& n : names) providers.push_back(make_provider(*registry, config, n, op));

  // The reference: the cpu backend's f32 kernel on the same values.
  auto cpu = registry->make_backend("cpu", {}, config.plugins.options);
  const auto data = host_inputs(info, spec, act, cpu->kernels);
  std::vector<Tensor> ref_set = device_set(*cpu, info, spec, data, DType::f32);
  const Result ref = run_once(*cpu, info, spec, ref_set);
  ref_set.clear();

  // The work of one call, from the table: shapes and dtypes of the arguments
  // (no memory) and the call's scalars.
  double set_bytes = 0.0;
  std::vector<Tensor> shapes;
  for (std::size_t i = 0; i < spec.args.size(); ++i) {
    shapes.push_back(Tensor::wrap(nullptr, spec.args[i].shape, dtype_of(info, spec, i, act)));
    set_bytes += static_cast<double>(shapes.back().bytes());
  }
  const KernelCall call = recorded_call(spec, shapes);
  const double flops = info.flops ? info.flops(call) : 0.0;
  const double work = flops > 0 ? flops : info.bytes(call);
  const double l2_bytes = l2_mb * 1024 * 1024;
  const std::size_t copies =
      std::min<std::size_t>(4096, static_cast<std::size_t>(std::floor(l2_bytes / std::max(set_bytes, 1.0))) + 1);
  const char* unit = flops > 0 ? "TFLOP/s" : "GB/s";
  const double unit_scale = flops > 0 ? 1e12 : 1e9;

  std::printf("op:        %s, dtype %s, size %g\n", op.c_str(), std::string(dtype_name(act)).c_str(), size);
  std::printf("arguments: %s\n", shape_list(info, spec, act).c_str());
  std::printf(
      "timing:    median of %d runs after %d warm-up; %zu copies of the arguments (%.1f MiB each, "
      "over %g MiB of L2 together), one per run in turn\n",
      runs, warmup, copies, set_bytes / (1024 * 1024), l2_mb);
  if (flops > 0)
    std::printf("work:      %.3f GFLOP per call\n", flops / 1e9);
  else
    std::printf("work:      %.3f MB read and written per call\n", work / 1e6);
  std::printf(
      "rel err:   max over the outputs of ||out - ref|| / ||ref||, ref = the cpu backend in f32 on "
      "the same inputs\n\n");
  std::printf("%-18s %-8s %-8s %10s %10s %10s %10s %10s %12s\n", "provider", "backend", "device", "median_ms", "min_ms",
              "max_ms", unit, "rel_err", "max_abs_err");
  for (auto& p : providers) {
    std::vector<Tensor> master = device_set(*p.be, info, spec, data, act);
    std::vector<std::vector<Tensor>> sets;
    sets.push_back(copy_set(*p.be, master));
    const Difference diff = difference(run_once(*p.be, info, spec, sets[0]), ref, spec.returns_value);
    for (std::size_t c = 1; c < copies; ++c) sets.push_back(copy_set(*p.be, master));
    master.clear();
    std::size_t next = 0;
    std::vector<double> ms = p.be->time_runs(
        [&] {
          spec.call(p.be->kernels, sets[next]);
          next = (next + 1) % sets.size();
        },
        warmup, runs);
    const double med = median(ms);
    const double lo = ms.empty() ? 0.0 : *std::min_element(ms.begin(), ms.end());
    const double hi = ms.empty() ? 0.0 : *std::max_element(ms.begin(), ms.end());
    const double rate = med > 0 ? work / (med * 1e-3) / unit_scale : 0.0;
    std::printf("%-18s %-8s %-8s %10.4f %10.4f %10.4f %10.3f %10.3g %12.3g\n", p.name.c_str(), p.backend.c_str(),
                device_name(p.be->device()).c_str(), med, lo, hi, rate, diff.rel, diff.max_abs);
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace neox::app
