// SPDX-License-Identifier: Apache-2.0
#include <algorithm>
#include <cmath>
#include <vector>

#include "layers.h"
#include "neox/arena.h"
#include "neox/backend.h"
#include "neox/error.h"
#include "neox/model/gpt_neox.h"

namespace neox {

using layers::LayerContext;

// The model's layers, in the order a forward runs them; each owns the
// parameters of one arena unit (output_unit() is the last).
struct GPTNeoX::Layers {
  Layers(const ModelConfig& config, layers::BlockScratch* scratch) : embedding(config), output(config, &embedding) {
    blocks.reserve(static_cast<std::size_t>(config.num_layers));
    for (std::int64_t i = 0; i < config.num_layers; ++i) blocks.emplace_back(config, static_cast<int>(i), scratch);
  }
  layers::EmbeddingLayer embedding;
  std::vector<layers::TransformerLayer> blocks;
  layers::OutputLayer output;  // reads the embedding's table when the weights are tied
};

// Buffers of one batch shape: the residual stream between layers, the
// blocks' saved activations, the logits, and the gradients that flow
// backwards. Activations are in the compute dtype; losses and statistics f32.
struct GPTNeoX::Activations {
  std::int64_t batch = 0, seq = 0;
  Tensor ids;                                // i32 [N] on the device
  Tensor targets;                            // i32 [N] on the device (-1: not trained on)
  std::vector<Tensor> stream;                // num_layers + 1 tensors [N, C]: each block's input, then the last output
  std::vector<layers::BlockBuffers> blocks;  // one per block, or per block of a checkpointed chunk
  Tensor recompute_out;                      // [N, C] a chunk's last output when recomputed (checkpointing)
  Tensor logits;                             // [N, V] (overwritten by dlogits in backward)
  Tensor losses, lse;                        // [N]
  Tensor d_a, d_b;                           // [N, C] gradient of the stream, alternating
  layers::BlockScratch scratch;
  double count = 0;  // positions counted in the last loss
  bool has_loss = false;
};

GPTNeoX::GPTNeoX(const ModelConfig& config, std::shared_ptr<Backend> backend, ComputeOptions compute,
                 ArenaPartitioning partitioning)
    : config_(config), compute_(compute), backend_(std::move(backend)), acts_(std::make_unique<Activations>()) {
  config_.validate();
  if (!backend_) throw Error("GPTNeoX: no backend");
  if (compute_.dtype != DType::f32 && compute_.dtype != DType::bf16 && compute_.dtype != DType::f16)
    throw Error("GPTNeoX: compute dtype must be f32, bf16 or f16, not " + std::string(dtype_name(compute_.dtype)));
  if (compute_.checkpoint_num_layers < 1)
    throw Error("GPTNeoX: checkpoint_num_layers must be at least 1, got " +
                std::to_string(compute_.checkpoint_num_layers));
  layers_ = std::make_unique<Layers>(config_, &acts_->scratch);
  // One arena unit per layer, in the order of the forward pass.
  layers_->embedding.declare(arena_);
  arena_.close_unit();
  for (auto& block : layers_->blocks) {
    block.declare(arena_);
    arena_.close_unit();
  }
  layers_->output.declare(arena_);
  arena_.close_unit();
  arena_.allocate(*backend_, compute_.dtype, partitioning);
  if (static_cast<int>(arena_.units().size()) != output_unit() + 1)
    throw Error("GPTNeoX: " + std::to_string(arena_.units().size()) + " parameter units for " +
                std::to_string(output_unit() + 1) + " layers (every layer must have parameters)");
}

void GPTNeoX::gather(int u) {
  if (hooks_) hooks_->gather(u);
}
void GPTNeoX::release(int u) {
  if (hooks_) hooks_->release(u);
}
void GPTNeoX::gradients_ready(int u) {
  if (hooks_) hooks_->gradients_ready(u);
}
void GPTNeoX::gather_output() {
  gather(output_unit());
  if (!config_.no_weight_tying) gather(0);
}
void GPTNeoX::release_output() {
  release(output_unit());
  if (!config_.no_weight_tying) release(0);
}

GPTNeoX::~GPTNeoX() = default;

void GPTNeoX::initialize(std::uint64_t seed) {
  set_parameters([&](int i, Tensor& dst) { backend_->copy_tensor(dst, arena_.initial_value(i, seed)); });
}

void GPTNeoX::set_parameters(const std::function<void(int index, Tensor& dst)>& write) {
  const auto& specs = arena_.specs();
  if (!arena_.params_partitioned()) {
    for (std::size_t i = 0; i < specs.size(); ++i) {
      Tensor dst = arena_.param(static_cast<int>(i));
      write(static_cast<int>(i), dst);
    }
    arena_.mark_params_changed();
    return;
  }
  if (!hooks_)
    throw Error(
        "GPTNeoX::set_parameters: the parameters are partitioned but no ParameterHooks are set (the "
        "optimizer's init_arena() and hooks() come first)");
  std::size_t i = 0;
  for (int u = 0; u <= output_unit(); ++u) {
    const ParamRange unit = arena_.units()[static_cast<std::size_t>(u)];
    const bool was_gathered = arena_.unit_gathered(u);
    Tensor buffer = arena_.unit_params(u);
    for (; i < specs.size() && arena_.unit_of(static_cast<int>(i)) == u; ++i) {
      const ParameterSpec& s = specs[i];
      Tensor dst = buffer.slice(s.offset - unit.offset, neox::numel(s.shape)).view(s.shape);
      write(static_cast<int>(i), dst);
    }
    hooks_->parameters_written(u);
    if (was_gathered)
      arena_.unit_params_ready(u);  // keep it gathered, with a current compute copy
    else
      arena_.drop_unit_params(u);
  }
}

namespace {
// Blocks per recomputed chunk, or all blocks when not checkpointing.
std::int64_t chunk_layers(const ModelConfig& cfg, const ComputeOptions& c) {
  return c.checkpoint_activations ? std::min(c.checkpoint_num_layers, cfg.num_layers) : cfg.num_layers;
}
}  // namespace

void GPTNeoX::ensure_batch(std::int64_t B, std::int64_t T) {
  Activations& a = *acts_;
  if (a.batch == B && a.seq == T) return;
  const std::int64_t N = B * T, C = config_.hidden_size, V = config_.padded_vocab_size();
  Backend* be = backend_.get();
  const DType dt = compute_.dtype;
  auto act = [&](Shape s) { return Tensor::empty(be, std::move(s), dt); };
  auto f32 = [&](Shape s) { return Tensor::empty(be, std::move(s), DType::f32); };
  // Free the old shape's buffers first so that both never coexist.
  a = Activations{};
  for (std::int64_t i = 0; i <= config_.num_layers; ++i) a.stream.push_back(act({N, C}));
  const std::int64_t slots = chunk_layers(config_, compute_);
  for (std::int64_t i = 0; i < slots; ++i)
    a.blocks.push_back(layers::BlockBuffers::make(be, config_, B, T, dt, false, true));
  if (compute_.checkpoint_activations) a.recompute_out = act({N, C});
  a.logits = act({N, V});
  a.losses = f32({N});
  a.lse = f32({N});
  a.d_a = act({N, C});
  a.d_b = act({N, C});
  a.scratch = {act({N, C}), act({N, C}), act({N, C}), act({N, 3 * C}), act({N, config_.ffn_size()})};
  a.batch = B;
  a.seq = T;
}

std::size_t GPTNeoX::activation_bytes() const {
  const Activations& a = *acts_;
  std::size_t n = 0;
  for (const Tensor* t : {&a.recompute_out, &a.logits, &a.losses, &a.lse, &a.d_a, &a.d_b, &a.scratch.d_ln,
                          &a.scratch.d_attn, &a.scratch.d_res, &a.scratch.d_qkv, &a.scratch.d_fc})
    if (t->defined()) n += t->bytes();
  for (const Tensor& t : a.stream) n += t.bytes();
  for (const auto& b : a.blocks) n += b.bytes();
  return n;
}

namespace {

// Host i32 copy of an i64/i32 host tensor of token ids or labels.
std::vector<std::int32_t> to_i32(const Tensor& t, const char* what) {
  if (!t.device().is_cpu()) throw Error(std::string(what) + " must be a host tensor");
  std::vector<std::int32_t> out(static_cast<std::size_t>(t.numel()));
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    std::int64_t v = t.dtype() == DType::i64   ? t.ptr<std::int64_t>()[i]
                     : t.dtype() == DType::i32 ? t.ptr<std::int32_t>()[i]
                                               : throw Error(std::string(what) + " must be i64 or i32, got " + t.str());
    if (v > INT32_MAX || v < INT32_MIN)
      throw Error(std::string(what) + ": value " + std::to_string(v) + " at position " + std::to_string(i) +
                  " does not fit a token id");
    out[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(v);
  }
  return out;
}

// input_ids [B,T] as i32 [B*T] on the device: host i64/i32 ids are checked
// against the vocabulary and copied; device ids must already be i32.
Tensor device_ids(Backend& backend, const ModelConfig& config, const Tensor& input_ids, const char* op) {
  const std::int64_t n = input_ids.numel();
  if (input_ids.device().is_cpu()) {
    auto ids = to_i32(input_ids, "input_ids");
    for (std::size_t i = 0; i < ids.size(); ++i)
      if (ids[i] < 0 || ids[i] >= config.padded_vocab_size())
        throw Error("input_ids: token " + std::to_string(ids[i]) + " at position " + std::to_string(i) +
                    " is outside the vocabulary [0, " + std::to_string(config.padded_vocab_size()) + ")");
    return backend.to_device(Tensor::wrap(ids.data(), {n}, DType::i32));
  }
  if (input_ids.dtype() != DType::i32) throw Error(std::string(op) + ": device input_ids must be i32");
  return input_ids.view({n});
}

}  // namespace

Tensor GPTNeoX::forward(const Tensor& input_ids, std::int64_t position_offset) {
  if (input_ids.ndim() != 2) throw Error("forward: input_ids must be [B, T], got " + input_ids.str());
  const std::int64_t B = input_ids.dim(0), T = input_ids.dim(1);
  if (position_offset + T > config_.max_position_embeddings && config_.pos_emb == "learned")
    throw Error("forward: sequence of " + std::to_string(T) + " exceeds max_position_embeddings " +
                std::to_string(config_.max_position_embeddings));
  ensure_batch(B, T);
  Activations& a = *acts_;
  a.has_loss = false;
  a.ids = device_ids(*backend_, config_, input_ids, "forward");
  arena_.refresh_weights(*backend_);
  LayerContext ctx{backend_.get(), B, T, position_offset};
  // Units left gathered by an earlier forward_loss without backward.
  if (hooks_) release_output();
  gather(0);
  layers_->embedding.forward(ctx, a.ids, a.stream[0]);
  release(0);
  for (std::int64_t l = 0; l < config_.num_layers; ++l) {
    gather(static_cast<int>(l + 1));
    run_block(ctx, l, a.stream[static_cast<std::size_t>(l + 1)]);
    release(static_cast<int>(l + 1));
  }
  gather_output();
  layers_->output.forward(ctx, a.stream.back(), a.logits);
  if (!keep_output_) release_output();
  return a.logits.view({B, T, config_.padded_vocab_size()});
}

void GPTNeoX::run_block(const LayerContext& ctx, std::int64_t l, Tensor& out) {
  Activations& a = *acts_;
  auto& block = layers_->blocks[static_cast<std::size_t>(l)];
  block.bind(&a.blocks[static_cast<std::size_t>(l % static_cast<std::int64_t>(a.blocks.size()))]);
  block.forward(ctx, a.stream[static_cast<std::size_t>(l)], out);
}

Tensor GPTNeoX::logits() const {
  if (!acts_->logits.defined()) throw Error("logits() before any forward()");
  return acts_->logits.view({acts_->batch, acts_->seq, config_.padded_vocab_size()});
}

double GPTNeoX::forward_loss(const Tensor& input_ids, const Tensor& labels, const Tensor& loss_mask) {
  if (labels.shape() != input_ids.shape())
    throw Error("forward_loss: labels " + labels.str() + " do not match input_ids " + input_ids.str());
  if (loss_mask.defined() &&
      (loss_mask.shape() != labels.shape() || loss_mask.dtype() != DType::f32 || !loss_mask.device().is_cpu()))
    throw Error("forward_loss: loss_mask must be a host f32 tensor shaped like labels, got " + loss_mask.str());
  auto targets = to_i32(labels, "labels");
  double count = 0;
  for (std::size_t i = 0; i < targets.size(); ++i) {
    if (loss_mask.defined() && loss_mask.ptr<float>()[i] == 0.0f) targets[i] = -1;
    if (targets[i] >= config_.padded_vocab_size())
      throw Error("labels: token " + std::to_string(targets[i]) + " at position " + std::to_string(i) +
                  " is outside the vocabulary");
    if (targets[i] >= 0) ++count;
  }
  keep_output_ = true;  // backward reads the output layer's weights again
  try {
    forward(input_ids);
  } catch (...) {
    keep_output_ = false;
    throw;
  }
  keep_output_ = false;
  Activations& a = *acts_;
  a.targets =
      backend_->to_device(Tensor::wrap(targets.data(), {static_cast<std::int64_t>(targets.size())}, DType::i32));
  Kernels& k = backend_->kernels;
  k.cross_entropy_forward(a.losses, a.lse, a.logits, a.targets);
  a.count = count;
  a.has_loss = true;
  return count > 0 ? k.sum(a.losses) / count : 0.0;
}

void GPTNeoX::backward(float loss_scale) {
  Activations& a = *acts_;
  if (!a.has_loss) throw Error("backward() without a preceding forward_loss()");
  a.has_loss = false;
  Kernels& k = backend_->kernels;
  LayerContext ctx{backend_.get(), a.batch, a.seq, 0};
  const float dloss = a.count > 0 ? static_cast<float>(loss_scale / a.count) : 0.0f;
  k.cross_entropy_backward(a.logits, a.logits, a.lse, a.targets, dloss);  // in place
  Tensor* dout = &a.d_a;
  Tensor* din = &a.d_b;
  gather_output();  // still gathered since forward_loss
  layers_->output.backward(ctx, a.logits, *dout);
  gradients_ready(output_unit());
  release_output();
  // Chunk by chunk from the last: with checkpointing, first recompute the
  // chunk's activations from its input (kept in the stream), then go back
  // through its blocks. The recomputed blocks' outputs are not needed (the
  // last one goes to a scratch buffer, the others are the stream's own
  // values again), so the stream the later chunks read stays untouched.
  const std::int64_t L = config_.num_layers, chunk = chunk_layers(config_, compute_);
  for (std::int64_t end = L; end > 0;) {
    const std::int64_t begin = compute_.checkpoint_activations ? ((end - 1) / chunk) * chunk : 0;
    if (compute_.checkpoint_activations)
      for (std::int64_t l = begin; l < end; ++l) {
        gather(static_cast<int>(l + 1));  // kept until the block's backward
        run_block(ctx, l, l + 1 < end ? a.stream[static_cast<std::size_t>(l + 1)] : a.recompute_out);
      }
    for (std::int64_t l = end - 1; l >= begin; --l) {
      gather(static_cast<int>(l + 1));
      layers_->blocks[static_cast<std::size_t>(l)].backward(ctx, *dout, *din);
      gradients_ready(static_cast<int>(l + 1));
      release(static_cast<int>(l + 1));
      std::swap(dout, din);
    }
    end = begin;
  }
  // The embedding's backward reads no weights, only its gradients.
  layers_->embedding.backward(ctx, *dout);
  gradients_ready(0);
}

// ---------------------------------------------------------------- inference

// What a cache holds: every block's keys and values, and the buffers of the
// newest chunk (reallocated when the chunk's size changes: typically once
// for the prompt and once for the one-token steps).
struct InferenceCache::State {
  const GPTNeoX* model = nullptr;
  std::int64_t batch = 0, max_tokens = 0, length = 0;
  std::vector<layers::KVCache> kv;  // one per block
  std::int64_t chunk = -1;          // Tq the buffers below are sized for
  bool last_only = false;
  Tensor stream_a, stream_b;   // [B*Tq, C], the residual stream, alternating
  layers::BlockBuffers block;  // shared by all blocks (one runs at a time)
  Tensor last;                 // [B, C] each sequence's last row (last_only)
  Tensor ln, mean, rstd;       // the output layer's LayerNorm
  Tensor logits;               // [B*Tq or B, V]
};

InferenceCache::InferenceCache() = default;
InferenceCache::~InferenceCache() = default;
InferenceCache::InferenceCache(InferenceCache&&) noexcept = default;
InferenceCache& InferenceCache::operator=(InferenceCache&&) noexcept = default;

namespace {
[[noreturn]] void empty_cache() { throw Error("InferenceCache: an empty cache (make one with GPTNeoX::make_cache)"); }
}  // namespace

std::int64_t InferenceCache::batch() const { return state_ ? state_->batch : (empty_cache(), 0); }
std::int64_t InferenceCache::max_tokens() const { return state_ ? state_->max_tokens : (empty_cache(), 0); }
std::int64_t InferenceCache::length() const { return state_ ? state_->length : (empty_cache(), 0); }
void InferenceCache::reset() {
  if (!state_) empty_cache();
  state_->length = 0;
}

InferenceCache GPTNeoX::make_cache(std::int64_t batch, std::int64_t max_tokens) {
  if (batch < 1 || max_tokens < 1)
    throw Error("make_cache: batch (" + std::to_string(batch) + ") and max_tokens (" + std::to_string(max_tokens) +
                ") must be positive");
  if (config_.pos_emb == "learned" && max_tokens > config_.max_position_embeddings)
    throw Error("make_cache: max_tokens " + std::to_string(max_tokens) + " exceeds max_position_embeddings " +
                std::to_string(config_.max_position_embeddings) + " (learned position embeddings)");
  InferenceCache cache;
  cache.state_ = std::make_unique<InferenceCache::State>();
  InferenceCache::State& s = *cache.state_;
  s.model = this;
  s.batch = batch;
  s.max_tokens = max_tokens;
  const Shape shape{batch, config_.num_attention_heads, max_tokens, config_.head_size()};
  for (std::int64_t l = 0; l < config_.num_layers; ++l)
    s.kv.push_back(
        {Tensor::empty(backend_.get(), shape, compute_.dtype), Tensor::empty(backend_.get(), shape, compute_.dtype)});
  return cache;
}

Tensor GPTNeoX::forward_cached(const Tensor& input_ids, InferenceCache& cache, bool last_only) {
  if (!cache.state_) throw Error("forward_cached: an empty cache (make one with make_cache)");
  InferenceCache::State& s = *cache.state_;
  if (s.model != this) throw Error("forward_cached: the cache was made by another model");
  if (input_ids.ndim() != 2) throw Error("forward_cached: input_ids must be [B, T], got " + input_ids.str());
  const std::int64_t B = input_ids.dim(0), T = input_ids.dim(1);
  if (B != s.batch)
    throw Error("forward_cached: input_ids " + input_ids.str() + " has batch " + std::to_string(B) +
                ", the cache holds " + std::to_string(s.batch) + " sequences");
  if (T < 1) throw Error("forward_cached: input_ids " + input_ids.str() + " has no tokens");
  if (s.length + T > s.max_tokens)
    throw Error("forward_cached: " + std::to_string(T) + " tokens at position " + std::to_string(s.length) +
                " exceed the cache's max_tokens " + std::to_string(s.max_tokens));
  Tensor ids = device_ids(*backend_, config_, input_ids, "forward_cached");
  arena_.refresh_weights(*backend_);

  Backend* be = backend_.get();
  const std::int64_t N = B * T, C = config_.hidden_size, V = config_.padded_vocab_size();
  const std::int64_t out_rows = last_only ? B : N;
  if (s.chunk != T || s.last_only != last_only) {
    const DType dt = compute_.dtype;
    auto act = [&](Shape shape) { return Tensor::empty(be, std::move(shape), dt); };
    auto f32 = [&](Shape shape) { return Tensor::empty(be, std::move(shape), DType::f32); };
    if (s.chunk != T) {
      s.stream_a = act({N, C});
      s.stream_b = act({N, C});
      s.block = layers::BlockBuffers::make(be, config_, B, T, dt, true, false);
    }
    s.last = last_only && T > 1 ? act({B, C}) : Tensor();
    s.ln = act({out_rows, C});
    s.mean = f32({out_rows});
    s.rstd = f32({out_rows});
    s.logits = f32({out_rows, V});
    s.chunk = T;
    s.last_only = last_only;
  }

  const LayerContext ctx{be, B, T, s.length};
  Tensor* x = &s.stream_a;
  Tensor* y = &s.stream_b;
  if (hooks_) release_output();
  gather(0);
  layers_->embedding.forward_cached(ctx, ids, *x);
  release(0);
  for (std::int64_t l = 0; l < config_.num_layers; ++l) {
    gather(static_cast<int>(l + 1));
    const auto i = static_cast<std::size_t>(l);
    layers_->blocks[i].forward_cached(ctx, *x, *y, s.kv[i], s.block);
    release(static_cast<int>(l + 1));
    std::swap(x, y);
  }
  gather_output();
  const layers::OutputLayer& output = layers_->output;
  if (last_only && T > 1) {
    for (std::int64_t b = 0; b < B; ++b) {
      Tensor dst = s.last.rows(b, b + 1);
      be->copy_tensor(dst, x->rows(b * T + T - 1, b * T + T));
    }
    const LayerContext last_ctx{be, B, 1, s.length + T - 1};
    output.forward_cached(last_ctx, s.last, s.logits, s.ln, s.mean, s.rstd);
  } else {
    output.forward_cached(ctx, *x, s.logits, s.ln, s.mean, s.rstd);
  }
  release_output();
  s.length += T;
  return s.logits.view({B, last_only ? 1 : T, V});
}

double GPTNeoX::flops_per_token() const {
  const ModelConfig& c = config_;
  // N without the input embedding (a lookup); the output layer is a matmul.
  double n = static_cast<double>(c.num_parameters() - c.padded_vocab_size() * c.hidden_size);
  if (!c.no_weight_tying) n += static_cast<double>(c.padded_vocab_size() * c.hidden_size);
  if (c.pos_emb == "learned") n -= static_cast<double>(c.max_position_embeddings * c.hidden_size);
  return 6.0 * n + 12.0 * static_cast<double>(c.num_layers * c.num_attention_heads * c.head_size() * c.seq_length);
}

}  // namespace neox
