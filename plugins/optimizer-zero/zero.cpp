// SPDX-License-Identifier: Apache-2.0
// optimizer plugin `zero`: AdamW (torch.optim.AdamW, as the `adamw` plugin)
// with DeepSpeed's ZeRO partitioning over the data-parallel ranks.
//
// Layout. The arena's units (one per layer) are cut into pieces of at most
// min(reduce_bucket_size, allgather_bucket_size) elements, and every piece
// is split evenly over the N ranks (padded to a multiple of N): rank r owns
// elements [r s, (r+1) s) of each piece, s = ceil(count / N). A rank keeps
// the Adam moments (exp_avg, exp_avg_sq, f32) and the averaged gradients of
// the parts it owns, concatenated in piece order; state_ranges() lists them
// so that checkpoints can reshard onto another number of ranks. Each
// reduce-scatter and all-gather moves one piece.
//
//   stage 1  gradients are accumulated whole on every rank; after the last
//            micro-batch each piece is reduce-scattered (average) into the
//            owner's partition; each rank steps its parts of the f32
//            parameters, which are then all-gathered.
//   stage 2  as 1, but gradients are partitioned too: a unit's gradients
//            exist whole only from its backward until gradients_ready(),
//            which reduce-scatters them into the partition (accumulating
//            over micro-batches) and frees them.
//   stage 3  as 2, and the f32 parameters are partitioned too (each rank
//            keeps the master copy of its parts): the model gathers a unit
//            (all-gather) just before using its weights and frees it after.
//
// It implements optimizer.type "adamw". The stage and the other DeepSpeed
// settings come from the run's [training] zero_* keys (OptimizerContext);
// the options ([plugins.options.zero]) may set the constants and buckets
// for this plugin alone, each defaulting to the run's value:
//   stage (1, 2 or 3): only to repeat training.zero_stage (a different
//     value is refused: the stage is set in one place)
//   beta1, beta2, eps: as `adamw` ([optimizer])
//   reduce_bucket_size, allgather_bucket_size (elements; training.zero_*,
//     default 5e8)
//   overlap_comm (training.zero_overlap_comm): stages 2 and 3 start each unit's
//     reduce-scatter when its gradients are ready and let backward go on;
//     at most kUnitsInFlight units are in flight (their gradients stay
//     whole until then), and all are complete before the next forward
//     (gather of unit 0) and before the step. Needs a communicator that
//     overlaps (Communicator::overlaps(); otherwise the calls block).
//     Stage 3 also prefetches: the first step records the order in which
//     the model gathers units; in later steps, as the model gathers a unit
//     in that order, the next one's all-gathers are started, so they run
//     while the model computes with this one (one unit prefetched at a
//     time; a step that leaves the order stops prefetching until the next
//     step). Stage 1 reduces after the last micro-batch.
//   contiguous_gradients (accepted for DeepSpeed configs: the partitions
//     are always contiguous)
#include <spdlog/spdlog.h>
#include <algorithm>
#include <cmath>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "neox/arena.h"
#include "neox/backend.h"
#include "neox/communicator.h"
#include "neox/error.h"
#include "neox/optimizer.h"
#include "neox/options.h"
#include "neox/plugin.h"

namespace neox {
namespace {

constexpr const char* kExpAvg = "exp_avg";
constexpr const char* kExpAvgSq = "exp_avg_sq";

// The saved moments must be usable before they replace the current ones:
// exp_avg finite, exp_avg_sq finite and >= 0 (a negative second moment makes
// its square root NaN, and so every later step). Device tensors are checked
// through a host buffer, a chunk at a time.
void check_moment_values(Backend& backend, const char* optimizer, const char* name, const Tensor& src,
                         bool nonnegative) {
  const std::int64_t n = src.numel();
  if (n > 0 && !src.defined())
    throw Error(std::string("optimizer '") + optimizer + "': load_state: state tensor '" + name + "' is undefined");
  constexpr std::int64_t kChunk = std::int64_t{1} << 20;
  std::vector<float> buffer;
  for (std::int64_t start = 0; start < n; start += kChunk) {
    const std::int64_t count = std::min(kChunk, n - start);
    const float* p = nullptr;
    if (src.device().is_cpu()) {
      p = src.ptr<float>() + start;
    } else {
      buffer.resize(static_cast<std::size_t>(count));
      backend.copy(buffer.data(), Device{}, src.ptr<float>() + start, src.device(),
                   static_cast<std::size_t>(count) * sizeof(float));
      p = buffer.data();
    }
    for (std::int64_t i = 0; i < count; ++i)
      if (!std::isfinite(p[i]) || (nonnegative && p[i] < 0.0f))
        throw Error(std::string("optimizer '") + optimizer + "': load_state: state tensor '" + name + "' element " +
                    std::to_string(start + i) + " is " + std::to_string(p[i]) + " (must be finite" +
                    (nonnegative ? " and >= 0" : "") + "; a corrupted checkpoint)");
  }
}
// overlap_comm: units whose reduce-scatters may be in flight at once (their
// whole gradients are kept until complete).
constexpr std::size_t kUnitsInFlight = 2;

struct ZeroSettings {
  int stage = 1;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  std::int64_t reduce_bucket_size = 500'000'000;
  std::int64_t allgather_bucket_size = 500'000'000;
  bool overlap_comm = false;
};

// One piece of a unit, split over the ranks.
struct Piece {
  int unit = 0;
  std::int64_t offset = 0;    // in the arena
  std::int64_t unit_pos = 0;  // from the unit's start
  std::int64_t count = 0;
  std::int64_t shard = 0;     // ceil(count / N): each rank's share, padded
  std::int64_t mine_pos = 0;  // this rank's part: [offset + mine_pos, + mine_count)
  std::int64_t mine_count = 0;
  std::int64_t local = 0;  // where that part starts in the local buffers
};

// A run of this rank's part with one weight decay.
struct Segment {
  std::int64_t arena = 0, local = 0, count = 0;
  float weight_decay = 0.0f;
};

class Zero final : public Optimizer, public ParameterHooks {
 public:
  explicit Zero(ZeroSettings s) : s_(s) {}

  std::string name() const override { return "zero"; }
  std::string state_kind() const override { return "adamw"; }

  void init(Backend&, Communicator&, const Tensor&, const Tensor&, const std::vector<ParamGroup>&) override {
    fail("init", "the zero optimizer partitions the parameter arena and needs init_arena() (as neox train calls it)");
  }

  void init_arena(Backend& backend, Communicator& comm, ParameterArena& arena, float weight_decay) override {
    if (backend_) fail("init", "called twice");
    if (!arena.allocated()) fail("init", "the arena is not allocated");
    // The arena is whole (its values are copied from it), or was allocated
    // as arena_partitioning() asked (its values come later, unit by unit,
    // through parameters_written()).
    if ((arena.params_partitioned() && s_.stage < 3) || (arena.grads_partitioned() && s_.stage < 2))
      fail("init", std::string("the arena's ") + (arena.params_partitioned() ? "parameters are" : "gradients are") +
                       " partitioned, which stage " + std::to_string(s_.stage) + " does not do");
    if (!backend.kernels.fill || !backend.kernels.adamw_update || !backend.kernels.axpby ||
        !backend.kernels.sum_squares)
      fail("init", "backend '" + backend.name() + "' lacks the fill, axpby, sum_squares or adamw_update kernel");
    backend_ = &backend;
    comm_ = &comm;
    arena_ = &arena;
    const std::int64_t N = comm.size(), r = comm.rank();
    const std::int64_t bucket = std::min(s_.reduce_bucket_size, s_.allgather_bucket_size);

    // Pieces and this rank's parts of them.
    std::int64_t local = 0, padded_max = 0;
    by_unit_.assign(arena.units().size(), {});
    for (std::size_t u = 0; u < arena.units().size(); ++u) {
      const ParamRange unit = arena.units()[u];
      for (std::int64_t pos = 0; pos < unit.count; pos += bucket) {
        Piece p;
        p.unit = static_cast<int>(u);
        p.unit_pos = pos;
        p.offset = unit.offset + pos;
        p.count = std::min(bucket, unit.count - pos);
        p.shard = (p.count + N - 1) / N;
        p.mine_pos = std::min(r * p.shard, p.count);
        p.mine_count = std::min(p.shard, p.count - p.mine_pos);
        p.local = local;
        local += p.mine_count;
        if (p.count != N * p.shard) padded_max = std::max(padded_max, N * p.shard);
        shard_max_ = std::max(shard_max_, p.shard);
        by_unit_[u].push_back(static_cast<int>(pieces_.size()));
        pieces_.push_back(p);
        if (p.mine_count > 0) ranges_.push_back({p.offset + p.mine_pos, p.mine_count});
      }
    }
    // Weight decay per run of this rank's parts.
    const std::vector<ParamGroup> groups = arena.groups(weight_decay);
    for (const Piece& p : pieces_) {
      const std::int64_t lo = p.offset + p.mine_pos, hi = lo + p.mine_count;
      for (const ParamGroup& g : groups) {
        const std::int64_t a = std::max(lo, g.offset), b = std::min(hi, g.offset + g.count);
        if (a < b) segments_.push_back({a, p.local + (a - lo), b - a, g.weight_decay});
      }
    }

    auto zeros = [&](std::int64_t n) {
      Tensor t = Tensor::empty(&backend, {n}, DType::f32);
      if (n > 0) backend.kernels.fill(t, 0.0f);
      return t;
    };
    grads_ = zeros(local);
    m_ = zeros(local);
    v_ = zeros(local);
    send_ = zeros(shard_max_);
    if (padded_max > 0) padded_ = zeros(padded_max);
    if (s_.stage >= 3) {
      master_ = zeros(local);
      if (!arena.params_partitioned()) {
        const Tensor whole = arena.params();
        for (const Piece& p : pieces_)
          if (p.mine_count > 0)
            copy(master_.slice(p.local, p.mine_count), whole.slice(p.offset + p.mine_pos, p.mine_count));
      }
    } else {
      params_ = arena.params();
    }
    if (s_.stage >= 2) arena.partition(s_.stage >= 3, true);
  }

  ArenaPartitioning arena_partitioning() const override { return {s_.stage >= 3, s_.stage >= 2}; }

  // ---- hooks
  ParameterHooks* hooks() override { return s_.stage >= 2 ? this : nullptr; }

  // Stage 3: the unit was written whole (initialisation, a load); keep this
  // rank's parts as the master copy. Stages 1-2 read the whole arena.
  void parameters_written(int unit) override {
    require_init("parameters_written");
    if (s_.stage < 3) return;
    drop_prefetch();  // it may hold the unit's old values
    const Tensor full = arena_->unit_params(unit);
    for (int i : by_unit_.at(static_cast<std::size_t>(unit))) {
      const Piece& p = pieces_[static_cast<std::size_t>(i)];
      if (p.mine_count > 0)
        copy(master_.slice(p.local, p.mine_count), full.slice(p.unit_pos + p.mine_pos, p.mine_count));
    }
  }

  void gather(int unit) override {
    // Unit 0 comes first in every forward (and, with tied embeddings, the
    // output layer's backward reads it): before the next micro-batch writes
    // gradients again, the last one's reductions must be complete.
    if (unit == 0) finish_in_flight(0);
    if (s_.stage < 3 || arena_->unit_gathered(unit)) return;
    if (recording_) order_.push_back(unit);
    // In the recorded order: the next unit is prefetched once this one is here.
    const bool in_order = following_ && order_pos_ < order_.size() && order_[order_pos_] == unit;
    if (!in_order) following_ = false;
    if (following_) ++followed_gathers_;
    if (prefetch_ && prefetch_->unit == unit) {
      ++prefetch_hits_;
      finish_prefetch();
    } else {
      drop_prefetch();
      Tensor full = arena_->unit_params(unit);
      for (int i : by_unit_.at(static_cast<std::size_t>(unit))) {
        const Piece& p = pieces_[static_cast<std::size_t>(i)];
        all_gather_piece(p, full.slice(p.unit_pos, p.count), master_.slice(p.local, p.mine_count));
      }
      arena_->unit_params_ready(unit);
    }
    if (in_order && ++order_pos_ < order_.size()) start_prefetch(order_[order_pos_]);
  }

  void release(int unit) override {
    if (s_.stage < 3) return;
    if (prefetch_ && prefetch_->unit == unit) return;  // not gathered yet: its buffer is in use
    arena_->drop_unit_params(unit);
  }

  void gradients_ready(int unit) override {
    if (s_.stage < 2 || !arena_->has_unit_grads(unit)) return;
    if (overlap()) {
      start_unit(unit);
      finish_in_flight(kUnitsInFlight);
      return;
    }
    reduce_unit(unit, true);
    arena_->drop_unit_grads(unit);
  }

  // ---- step
  bool reduces_gradients() const override { return true; }

  void zero_grad() override {
    require_init("zero_grad");
    if (grads_.numel() > 0) backend_->kernels.fill(grads_, 0.0f);
    // A step's forward and backward begin: stage 3 with overlap records the
    // first step's gather order, and follows it in later steps.
    if (s_.stage >= 3 && overlap()) {
      if (!recorded_) recording_ = true;
      following_ = recorded_;
      order_pos_ = 0;
    }
  }

  void reduce_gradients() override {
    require_init("reduce_gradients");
    // Forward and backward are over: the recorded order ends here (evaluation
    // and saves between steps gather in orders of their own).
    if (recording_) {
      recording_ = false;
      recorded_ = true;
      spdlog::info(
          "optimizer 'zero': stage 3 prefetches each unit's parameters along the first step's order "
          "({} gathers per step)",
          order_.size());
    } else if (following_ && !reported_) {  // the first step that followed the order
      reported_ = true;
      spdlog::info("optimizer 'zero': stage 3 prefetch: {} of the {} gathers of step 2 arrived prefetched",
                   prefetch_hits_, followed_gathers_);
    }
    following_ = false;
    drop_prefetch();
    finish_in_flight(0);
    // Stage 1 reduces the whole gradients now; stages 2 and 3 reduced each
    // unit as its backward finished (any unit left over is reduced here).
    for (std::size_t u = 0; u < by_unit_.size(); ++u) {
      const int unit = static_cast<int>(u);
      if (s_.stage == 1) {
        reduce_unit(unit, false);
      } else if (arena_->has_unit_grads(unit)) {
        reduce_unit(unit, true);
        arena_->drop_unit_grads(unit);
      }
    }
  }

  double gradient_sum_squares() override {
    require_init("gradient_sum_squares");
    Tensor total = Tensor::zeros_host({1}, DType::f64);
    total.ptr<double>()[0] = grads_.numel() > 0 ? backend_->kernels.sum_squares(grads_) : 0.0;
    if (comm_->size() > 1) comm_->all_reduce(total, ReduceOp::sum);
    return total.ptr<double>()[0];
  }

  void step(const StepContext& ctx) override {
    require_init("step");
    drop_prefetch();  // would hold the parameters from before the step
    if (ctx.step < 1) fail("step", "step number " + std::to_string(ctx.step) + " must be 1 or more (1-based)");
    if (!std::isfinite(ctx.lr) || ctx.lr < 0.0f)
      fail("step", "learning rate " + std::to_string(ctx.lr) + " must be finite and >= 0");
    if (!std::isfinite(ctx.grad_scale)) fail("step", "grad_scale " + std::to_string(ctx.grad_scale) + " is not finite");
    AdamWParams a;
    a.lr = ctx.lr;
    a.beta1 = static_cast<float>(s_.beta1);
    a.beta2 = static_cast<float>(s_.beta2);
    a.eps = static_cast<float>(s_.eps);
    a.step = ctx.step;
    a.grad_scale = ctx.grad_scale;
    for (const Segment& seg : segments_) {
      a.weight_decay = seg.weight_decay;
      Tensor param = s_.stage >= 3 ? master_.slice(seg.local, seg.count) : params_.slice(seg.arena, seg.count);
      Tensor grad = grads_.slice(seg.local, seg.count);
      Tensor m = m_.slice(seg.local, seg.count);
      Tensor v = v_.slice(seg.local, seg.count);
      backend_->kernels.adamw_update(param, grad, m, v, a);
    }
    // Stages 1 and 2: every rank needs every updated parameter.
    if (s_.stage < 3)
      for (const Piece& p : pieces_)
        all_gather_piece(p, params_.slice(p.offset, p.count), params_.slice(p.offset + p.mine_pos, p.mine_count));
  }

  // ---- state
  TensorMap state() override {
    require_init("state");
    return {{kExpAvg, m_}, {kExpAvgSq, v_}};
  }

  bool partitions_state() const override { return true; }
  std::vector<ParamRange> state_ranges() const override { return ranges_; }

  void load_state(const TensorMap& state) override {
    require_init("load_state");
    for (const auto& [name, t] : state)
      if (name != kExpAvg && name != kExpAvgSq)
        fail("load_state", "unknown state tensor '" + name + "' (expected '" + kExpAvg + "' and '" + kExpAvgSq + "')");
    for (const char* name : {kExpAvg, kExpAvgSq}) {
      auto it = state.find(name);
      if (it == state.end()) fail("load_state", std::string("state tensor '") + name + "' is missing");
      if (it->second.dtype() != DType::f32 || it->second.numel() != m_.numel())
        fail("load_state", std::string("state tensor '") + name + "': expected f32[" + std::to_string(m_.numel()) +
                               "] (this rank's partition), got " + it->second.str());
    }
    check_moment_values(*backend_, "zero", kExpAvg, state.at(kExpAvg), false);
    check_moment_values(*backend_, "zero", kExpAvgSq, state.at(kExpAvgSq), true);
    for (auto [name, dst] : {std::pair<const char*, Tensor*>{kExpAvg, &m_}, {kExpAvgSq, &v_}}) {
      const Tensor& src = state.at(name);
      if (dst->bytes() > 0) backend_->copy(dst->data(), dst->device(), src.data(), src.device(), dst->bytes());
    }
  }

  std::int64_t state_bytes() const override { return static_cast<std::int64_t>(m_.bytes() + v_.bytes()); }
  std::int64_t parameter_bytes() const override {
    return static_cast<std::int64_t>(grads_.bytes() + (master_.defined() ? master_.bytes() : 0));
  }

 private:
  [[noreturn]] static void fail(const char* where, const std::string& problem) {
    throw Error(std::string("optimizer 'zero': ") + where + ": " + problem);
  }
  void require_init(const char* where) const {
    if (!backend_) fail(where, "called before init_arena()");
  }
  void copy(Tensor dst, const Tensor& src) { backend_->copy_tensor(dst, src); }

  bool overlap() const { return s_.overlap_comm && comm_->size() > 1 && comm_->overlaps(); }

  // overlap_comm: a unit's reduce-scatters, started; each piece reduces
  // into its own buffer (`out`), padded pieces from their own copy.
  struct InFlight {
    int unit = 0;
    CommTicket last = 0;
    std::vector<Tensor> outs;  // by piece of the unit
    std::vector<Tensor> keep;  // inputs, until complete
  };

  void start_unit(int unit) {
    const std::int64_t N = comm_->size();
    InFlight f;
    f.unit = unit;
    const Tensor full = arena_->unit_grads(unit);
    for (int i : by_unit_[static_cast<std::size_t>(unit)]) {
      const Piece& p = pieces_[static_cast<std::size_t>(i)];
      Tensor in = full.slice(p.unit_pos, p.count);
      if (p.count != N * p.shard) {
        Tensor padded = Tensor::empty(backend_, {N * p.shard}, DType::f32);
        copy(padded.slice(0, p.count), in);
        Tensor tail = padded.slice(p.count, N * p.shard - p.count);
        backend_->kernels.fill(tail, 0.0f);
        in = padded;
      }
      Tensor out = Tensor::empty(backend_, {p.shard}, DType::f32);
      f.last = comm_->reduce_scatter_start(in, out, ReduceOp::avg);
      f.outs.push_back(out);
      f.keep.push_back(in);
    }
    in_flight_.push_back(std::move(f));
  }

  // Stage 3 prefetch: `unit`'s all-gathers, started into its arena buffer
  // (padded pieces into their own buffer), each from its own copy of this
  // rank's part.
  struct Prefetch {
    int unit = 0;
    CommTicket last = 0;
    std::vector<Tensor> padded;  // by piece of the unit; undefined when the piece splits evenly
    std::vector<Tensor> keep;    // inputs, until complete
  };

  void start_prefetch(int unit) {
    if (arena_->unit_gathered(unit)) return;  // still gathered: nothing to fetch
    const std::int64_t N = comm_->size();
    Prefetch f;
    f.unit = unit;
    Tensor full = arena_->unit_params(unit);
    for (int i : by_unit_[static_cast<std::size_t>(unit)]) {
      const Piece& p = pieces_[static_cast<std::size_t>(i)];
      Tensor in = Tensor::empty(backend_, {p.shard}, DType::f32);
      fill_shard(p, in, master_.slice(p.local, p.mine_count));
      Tensor out = full.slice(p.unit_pos, p.count), padded;
      if (p.count != N * p.shard) out = padded = Tensor::empty(backend_, {N * p.shard}, DType::f32);
      f.last = comm_->all_gather_start(in, out);
      f.padded.push_back(padded);
      f.keep.push_back(in);
    }
    prefetch_ = std::move(f);
  }

  // The prefetched unit is needed now: waits for it and marks it gathered.
  void finish_prefetch() {
    Prefetch f = std::move(*prefetch_);
    prefetch_.reset();
    comm_->wait(f.last);
    Tensor full = arena_->unit_params(f.unit);
    const auto& pieces = by_unit_[static_cast<std::size_t>(f.unit)];
    for (std::size_t k = 0; k < pieces.size(); ++k) {
      const Piece& p = pieces_[static_cast<std::size_t>(pieces[k])];
      if (f.padded[k].defined()) copy(full.slice(p.unit_pos, p.count), f.padded[k].slice(0, p.count));
    }
    arena_->unit_params_ready(f.unit);
  }

  // The prefetched unit is not needed (the model left the order, or the
  // parameters changed): waits for its gathers and frees it.
  void drop_prefetch() {
    if (!prefetch_) return;
    Prefetch f = std::move(*prefetch_);
    prefetch_.reset();
    comm_->wait(f.last);
    arena_->drop_unit_params(f.unit);  // never marked gathered: that is finish_prefetch()
  }

  // Completes the oldest units in flight until at most `keep` remain: adds
  // their averaged parts to the partition and frees their whole gradients.
  void finish_in_flight(std::size_t keep) {
    while (in_flight_.size() > keep) {
      InFlight f = std::move(in_flight_.front());
      in_flight_.pop_front();
      comm_->wait(f.last);
      const auto& pieces = by_unit_[static_cast<std::size_t>(f.unit)];
      for (std::size_t k = 0; k < pieces.size(); ++k) {
        const Piece& p = pieces_[static_cast<std::size_t>(pieces[k])];
        if (p.mine_count == 0) continue;
        Tensor mine = grads_.slice(p.local, p.mine_count);
        backend_->kernels.axpby(mine, f.outs[k].slice(0, p.mine_count), 1.0f, 1.0f);
      }
      arena_->drop_unit_grads(f.unit);
    }
  }

  // Reduce-scatters (average) each piece of `unit`'s gradients into this
  // rank's partition, adding to it (accumulate) or replacing it.
  void reduce_unit(int unit, bool accumulate) {
    const Tensor full = arena_->unit_grads(unit);
    for (int i : by_unit_[static_cast<std::size_t>(unit)]) {
      const Piece& p = pieces_[static_cast<std::size_t>(i)];
      const std::int64_t N = comm_->size();
      Tensor in = full.slice(p.unit_pos, p.count);
      if (p.count != N * p.shard) {  // pad to N equal parts
        Tensor padded = padded_.slice(0, N * p.shard);
        copy(padded.slice(0, p.count), in);
        Tensor tail = padded.slice(p.count, N * p.shard - p.count);
        backend_->kernels.fill(tail, 0.0f);
        in = padded;
      }
      Tensor out = send_.slice(0, p.shard);
      comm_->reduce_scatter(in, out, ReduceOp::avg);
      if (p.mine_count == 0) continue;
      Tensor mine = grads_.slice(p.local, p.mine_count);
      backend_->kernels.axpby(mine, out.slice(0, p.mine_count), 1.0f, accumulate ? 1.0f : 0.0f);
    }
  }

  // An all-gather's input [shard]: this rank's part of the piece (`mine`),
  // then zeros up to the equal share.
  void fill_shard(const Piece& p, Tensor& in, const Tensor& mine) {
    if (p.mine_count > 0) copy(in.slice(0, p.mine_count), mine);
    if (p.mine_count < p.shard) {
      Tensor tail = in.slice(p.mine_count, p.shard - p.mine_count);
      backend_->kernels.fill(tail, 0.0f);
    }
  }

  // All-gathers one piece into `dst` [count] from every rank's part; `mine`
  // is this rank's part (may alias dst: it is copied out first).
  void all_gather_piece(const Piece& p, Tensor dst, const Tensor& mine) {
    const std::int64_t N = comm_->size();
    Tensor in = send_.slice(0, p.shard);
    fill_shard(p, in, mine);
    if (p.count == N * p.shard) {
      comm_->all_gather(in, dst);
    } else {
      Tensor padded = padded_.slice(0, N * p.shard);
      comm_->all_gather(in, padded);
      copy(dst, padded.slice(0, p.count));
    }
  }

  ZeroSettings s_;
  Backend* backend_ = nullptr;
  Communicator* comm_ = nullptr;
  ParameterArena* arena_ = nullptr;
  std::vector<Piece> pieces_;
  std::vector<std::vector<int>> by_unit_;  // piece indices of each unit
  std::vector<Segment> segments_;
  std::vector<ParamRange> ranges_;  // this rank's parts, in local order
  std::int64_t shard_max_ = 0;
  Tensor params_;  // stages 1-2: the arena's whole f32 parameters
  Tensor master_;  // stage 3: this rank's parts of the f32 parameters
  Tensor grads_, m_, v_;
  Tensor send_;                     // [max shard]: reduce-scatter output, all-gather input
  Tensor padded_;                   // [N x shard] for pieces that do not split evenly
  std::deque<InFlight> in_flight_;  // overlap_comm: oldest first
  // Stage 3 with overlap_comm: the gather order of the first step's forward
  // and backward, and where the current step is in it.
  std::vector<int> order_;
  bool recording_ = false, recorded_ = false, following_ = false, reported_ = false;
  std::size_t order_pos_ = 0;
  std::int64_t prefetch_hits_ = 0, followed_gathers_ = 0;  // reported once, for step 2
  std::optional<Prefetch> prefetch_;
};

double beta_option(const Options& options, const char* key, double def) {
  double b = options.get_double(key, def, 0.0, 1.0);
  if (!(b < 1.0)) throw Error(options.where(key) + ": must be below 1 (got " + std::to_string(b) + ")");
  return b;
}

Optimizer* make_zero(const Options& options, const OptimizerContext& context) {
  if (context.type != "adamw")
    throw Error(context.config + ": optimizer.type \"" + context.type + "\": this plugin implements \"adamw\" only");
  if (context.zero_stage < 1 || context.zero_stage > 3)
    throw Error(context.config + ": training.zero_stage = " + std::to_string(context.zero_stage) +
                ": the zero optimizer partitions with stage 1, 2 or 3");
  ZeroSettings s;
  s.stage = static_cast<int>(context.zero_stage);
  if (options.has("stage") && options.get_int("stage", 0, 0, 3) != context.zero_stage)
    throw Error(options.where("stage") + ": contradicts training.zero_stage = " + std::to_string(context.zero_stage) +
                " (set the stage in one place: training.zero_stage)");
  s.beta1 = beta_option(options, "beta1", context.beta1);
  s.beta2 = beta_option(options, "beta2", context.beta2);
  s.eps = options.get_double("eps", context.eps, 0.0, 1.0);
  s.reduce_bucket_size =
      options.get_int("reduce_bucket_size", context.zero_reduce_bucket_size, 1, std::int64_t{1} << 40);
  s.allgather_bucket_size =
      options.get_int("allgather_bucket_size", context.zero_allgather_bucket_size, 1, std::int64_t{1} << 40);
  s.overlap_comm = options.get_bool("overlap_comm", context.zero_overlap_comm);
  (void)options.get_bool("contiguous_gradients", context.zero_contiguous_gradients);
  options.reject_unknown();
  return new Zero(s);
}

}  // namespace
}  // namespace neox

NEOX_PLUGIN(optimizer, "zero", "1.0",
            "AdamW with DeepSpeed ZeRO stages 1-3: optimizer state, gradients and parameters partitioned over ranks",
            &neox::make_zero)
