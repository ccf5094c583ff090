// SPDX-License-Identifier: Apache-2.0
// comm plugin `nccl`: collectives among the GPUs of a job, through NCCL.
// One process per GPU; see README.md for the design and docs/distributed.md
// for launching.
//
// Options ([plugins.options.nccl]):
//   bootstrap  how the ranks share NCCL's unique id: "mpi" (MPI_Bcast; the
//              job was started by mpirun or srun --mpi=pmix), "tcp" (rank 0
//              serves it at MASTER_ADDR:MASTER_PORT, tcp_rendezvous.h) or
//              "auto" (default: mpi when an MPI launcher started the process
//              and the plugin was built with MPI, else tcp)
//   timeout_s  seconds any rank waits for the others (rendezvous, init, each
//              operation) before it aborts the communicator and throws
//              (default 300)
//   device     the CUDA device; default the local rank (neox::detect_launch)
//              modulo the visible devices, as the cuda backend picks it
//
// Buffers: tensors on this communicator's GPU are used in place; host
// tensors (the trainer's loss and config hash) are staged through device
// memory. Without a usable GPU the factory throws neox::DeviceUnavailable.
//
// Streams: operations run on the plugin's own stream. Once set_stream()
// gave it the backend's stream, each operation waits there (an event) for
// the work queued before it, so the caller need not synchronise; without it
// each operation synchronises the device first. The *_start calls return
// after queueing (their operands on this GPU; with a host operand they run
// blocking and return 0); wait() polls the operation's completion event
// under the timeout, so the backend's kernels queued meanwhile overlap the
// transfer.
#include <cuda_runtime_api.h>
#include <nccl.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <sstream>
#include <string>
#include <thread>

#include "mpi_bootstrap.h"
#include "neox/communicator.h"
#include "neox/error.h"
#include "neox/launch.h"
#include "neox/options.h"
#include "neox/plugin.h"
#include "tcp_rendezvous.h"

namespace neox {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string seconds_text(double s) {
  std::ostringstream os;
  os << s << " s";
  return os.str();
}

Clock::time_point deadline_after(Clock::time_point from, double seconds) {
  return from + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

// Sleeps a little longer each time: spins for the first tenth of a
// millisecond (small collectives finish within it), then sleeps up to 1 ms.
class Backoff {
 public:
  void wait() {
    if (seconds_since(start_) < 1e-4) {
      std::this_thread::yield();
      return;
    }
    std::this_thread::sleep_for(pause_);
    pause_ = std::min(pause_ * 2, std::chrono::microseconds(1000));
  }

 private:
  Clock::time_point start_ = Clock::now();
  std::chrono::microseconds pause_{20};
};

// One operand of an operation as NCCL sees it: the tensor's own memory when
// it lives on this GPU, or a region of the staging buffer for a host tensor.
struct Operand {
  const Tensor* tensor = nullptr;
  bool in = false;   // read by the operation: a host tensor is uploaded first
  bool out = false;  // written: a host tensor is downloaded after
  void* device = nullptr;
};

class NcclCommunicator final : public Communicator {
 public:
  // `over_mpi`: the ranks met through MPI (a failure then aborts the MPI job at exit).
  NcclCommunicator(int device, int rank, int size, int local_rank, const ncclUniqueId& id, double timeout_s,
                   bool over_mpi)
      : device_(device), rank_(rank), size_(size), local_rank_(local_rank), timeout_s_(timeout_s), over_mpi_(over_mpi) {
    // A process that fails alone ends the MPI job at exit (neox/launch.h).
    if (over_mpi_ && size_ > 1) on_job_failed_alone(&mpi_bootstrap_job_failed);
    try {
      cuda("init", cudaSetDevice(device_));
      cuda("init", cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
      // Non-blocking: NCCL calls return at once and report progress through
      // ncclCommGetAsyncError, so that every wait below has a deadline.
      ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
      config.blocking = 0;
      const auto start = Clock::now();
      nccl("init", ncclCommInitRankConfig(&comm_, size_, id, rank_, &config));
      wait_ready("init", start, "not every rank joined; check that all " + std::to_string(size_) + " ranks started");
    } catch (...) {
      release();
      throw;
    }
  }

  ~NcclCommunicator() override { release(); }

  std::string name() const override { return "nccl"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }

  void all_reduce(Tensor& buffer, ReduceOp op) override {
    const char* what = "all_reduce";
    const ncclDataType_t type = reduce_type(what, buffer);
    const ncclRedOp_t rop = nccl_op(what, op);
    Operand b{&buffer, true, true};
    run(what, ring_all_reduce_bytes(static_cast<std::int64_t>(buffer.bytes()), size_), {&b}, [&] {
      return ncclAllReduce(b.device, b.device, static_cast<std::size_t>(buffer.numel()), type, rop, comm_, stream_);
    });
  }

  void reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op) override {
    const char* what = "reduce_scatter";
    check_reduce_scatter(what, in, out);
    const ncclDataType_t type = reduce_type(what, in);
    const ncclRedOp_t rop = nccl_op(what, op);
    Operand i{&in, true, false}, o{&out, false, true};
    run(what, ring_gather_bytes(static_cast<std::int64_t>(in.bytes()), size_), {&i, &o}, [&] {
      return ncclReduceScatter(i.device, o.device, static_cast<std::size_t>(out.numel()), type, rop, comm_, stream_);
    });
  }

  void all_gather(const Tensor& in, Tensor& out) override {
    const char* what = "all_gather";
    check_all_gather(what, in, out);
    Operand i{&in, true, false}, o{&out, false, true};
    run(what, ring_gather_bytes(static_cast<std::int64_t>(out.bytes()), size_), {&i, &o},
        [&] { return ncclAllGather(i.device, o.device, in.bytes(), ncclUint8, comm_, stream_); });
  }

  void broadcast(Tensor& buffer, int root) override {
    const char* what = "broadcast";
    check_rank(what, "root", root);
    Operand b{&buffer, rank_ == root, rank_ != root};
    // Ring bytes: every rank forwards the buffer but the root's predecessor.
    const std::int64_t sent = rank_ == (root + size_ - 1) % size_ ? 0 : static_cast<std::int64_t>(buffer.bytes());
    run(what, sent, {&b},
        [&] { return ncclBroadcast(b.device, b.device, buffer.bytes(), ncclUint8, root, comm_, stream_); });
  }

  void send(const Tensor& buffer, int peer, int tag) override {
    const char* what = "send";
    check_peer(what, peer, tag);
    Operand b{&buffer, true, false};
    run(what, static_cast<std::int64_t>(buffer.bytes()), {&b},
        [&] { return ncclSend(b.device, buffer.bytes(), ncclUint8, peer, comm_, stream_); });
  }

  void recv(Tensor& buffer, int peer, int tag) override {
    const char* what = "recv";
    check_peer(what, peer, tag);
    Operand b{&buffer, false, true};
    run(what, 0, {&b}, [&] { return ncclRecv(b.device, buffer.bytes(), ncclUint8, peer, comm_, stream_); });
  }

  // NCCL has no barrier: an all-reduce of one int that every rank must join.
  void barrier() override {
    run("barrier", 0, {}, [&] {
      return ncclAllReduce(scratch(sizeof(int)), scratch(sizeof(int)), 1, ncclInt32, ncclSum, comm_, stream_);
    });
  }

  CommTicket all_reduce_start(Tensor& buffer, ReduceOp op) override {
    const char* what = "all_reduce";
    const ncclDataType_t type = reduce_type(what, buffer);
    const ncclRedOp_t rop = nccl_op(what, op);
    if (!on_this_gpu({&buffer})) return Communicator::all_reduce_start(buffer, op);
    return start(what, ring_all_reduce_bytes(static_cast<std::int64_t>(buffer.bytes()), size_), {buffer}, [&] {
      return ncclAllReduce(buffer.data(), buffer.data(), static_cast<std::size_t>(buffer.numel()), type, rop, comm_,
                           stream_);
    });
  }

  CommTicket reduce_scatter_start(const Tensor& in, Tensor& out, ReduceOp op) override {
    const char* what = "reduce_scatter";
    check_reduce_scatter(what, in, out);
    const ncclDataType_t type = reduce_type(what, in);
    const ncclRedOp_t rop = nccl_op(what, op);
    if (!on_this_gpu({&in, &out})) return Communicator::reduce_scatter_start(in, out, op);
    return start(what, ring_gather_bytes(static_cast<std::int64_t>(in.bytes()), size_), {in, out}, [&] {
      return ncclReduceScatter(in.data(), out.data(), static_cast<std::size_t>(out.numel()), type, rop, comm_, stream_);
    });
  }

  CommTicket all_gather_start(const Tensor& in, Tensor& out) override {
    const char* what = "all_gather";
    check_all_gather(what, in, out);
    if (!on_this_gpu({&in, &out})) return Communicator::all_gather_start(in, out);
    return start(what, ring_gather_bytes(static_cast<std::int64_t>(out.bytes()), size_), {in, out},
                 [&] { return ncclAllGather(in.data(), out.data(), in.bytes(), ncclUint8, comm_, stream_); });
  }

  void wait(CommTicket ticket) override {
    if (!pending_.empty() && pending_.front().ticket <= ticket) check_usable("wait");
    while (!pending_.empty() && pending_.front().ticket <= ticket) {
      Pending& p = pending_.front();
      wait_until(p.op, p.start, [&] { return cudaEventQuery(p.done); });
      record(p.op, p.bytes_sent, seconds_since(p.start));
      free_events_.push_back(p.done);
      pending_.pop_front();
    }
  }

  bool overlaps() const override { return true; }
  void set_stream(void* native_stream) override { compute_ = static_cast<cudaStream_t>(native_stream); }

 private:
  // Frees everything; never throws.
  void release() noexcept {
    if (stream_) (void)cudaSetDevice(device_);
    if (comm_) {
      // Blocking operations have completed when their call returned; started
      // ones that nobody waited for may still run on stream_: they get the
      // same bounded wait, then finalising (local work) is bounded too. A
      // failed communicator, or one whose stream does not drain, is aborted.
      const auto deadline = deadline_after(Clock::now(), std::min(timeout_s_, 30.0));
      Backoff backoff;
      cudaError_t drained = stream_ ? cudaStreamQuery(stream_) : cudaSuccess;
      while (failure_.empty() && drained == cudaErrorNotReady && Clock::now() < deadline) {
        backoff.wait();
        drained = cudaStreamQuery(stream_);
      }
      if (drained != cudaSuccess) (void)cudaGetLastError();
      const ncclResult_t finalize =
          failure_.empty() && drained == cudaSuccess ? ncclCommFinalize(comm_) : ncclInternalError;
      const bool clean = finalize == ncclSuccess || finalize == ncclInProgress;  // non-blocking: in progress
      ncclResult_t state = ncclInProgress;
      while (clean && ncclCommGetAsyncError(comm_, &state) == ncclSuccess && state == ncclInProgress &&
             Clock::now() < deadline)
        backoff.wait();
      if (clean && state == ncclSuccess)
        (void)ncclCommDestroy(comm_);
      else
        (void)ncclCommAbort(comm_);
    }
    comm_ = nullptr;
    for (Pending& p : pending_) free_events_.push_back(p.done);
    pending_.clear();
    for (cudaEvent_t e : free_events_) (void)cudaEventDestroy(e);
    free_events_.clear();
    if (ready_) (void)cudaEventDestroy(ready_);
    ready_ = nullptr;
    if (scratch_) (void)cudaFree(scratch_);
    scratch_ = nullptr;
    if (stream_) (void)cudaStreamDestroy(stream_);
    stream_ = nullptr;
  }

  std::string prefix() const {
    return "comm 'nccl' (rank " + std::to_string(rank_) + " of " + std::to_string(size_) +
           ", cuda:" + std::to_string(device_) + "): ";
  }

  [[noreturn]] void fail(const char* op, const std::string& problem) const {
    throw Error(prefix() + op + ": " + problem);
  }

  void cuda(const char* op, cudaError_t e) const {
    if (e == cudaSuccess) return;
    (void)cudaGetLastError();
    fail(op, std::string("CUDA error ") + cudaGetErrorName(e) + ": " + cudaGetErrorString(e));
  }

  // NCCL's words for a failure: the code's string and the last error's text.
  std::string nccl_text(ncclResult_t r) const {
    std::string s = ncclGetErrorString(r);
    const char* last = ncclGetLastError(comm_);
    if (last && *last) s += ": " + std::string(last);
    if (s.find("Duplicate GPU") != std::string::npos) {
      int count = 0;
      (void)cudaGetDeviceCount(&count);
      s += " (NCCL takes one rank per GPU: start at most " + std::to_string(count) + " rank" + (count == 1 ? "" : "s") +
           " per node here, e.g. mpirun -np " + std::to_string(count) +
           " or srun --gpus-per-task=1, or give each rank its own GPU with CUDA_VISIBLE_DEVICES)";
    }
    return s;
  }

  // Aborts the communicator (NCCL kernels that wait for a dead peer end) and
  // throws; later calls throw at once.
  [[noreturn]] void abort_and_fail(const char* op, const std::string& problem) {
    failure_ = std::string(op) + ": " + problem;
    if (over_mpi_) mpi_bootstrap_job_failed();
    if (comm_) (void)ncclCommAbort(comm_);
    comm_ = nullptr;
    fail(op, problem + "; the communicator was aborted");
  }

  void nccl(const char* op, ncclResult_t r) {
    if (r == ncclSuccess || r == ncclInProgress) return;
    abort_and_fail(op, "NCCL error " + nccl_text(r));
  }

  // Waits until the communicator has no call in progress (the enqueue of a
  // non-blocking call, or init), or fails at the deadline naming `late`.
  void wait_ready(const char* op, Clock::time_point start, const std::string& late) {
    const auto deadline = deadline_after(start, timeout_s_);
    Backoff backoff;
    for (;;) {
      ncclResult_t state = ncclSuccess;
      const ncclResult_t r = ncclCommGetAsyncError(comm_, &state);
      if (r != ncclSuccess) abort_and_fail(op, "ncclCommGetAsyncError: " + nccl_text(r));
      if (state == ncclSuccess) return;
      if (state != ncclInProgress) abort_and_fail(op, "NCCL error " + nccl_text(state));
      if (Clock::now() > deadline) abort_and_fail(op, "no progress within " + seconds_text(timeout_s_) + ": " + late);
      backoff.wait();
    }
  }

  // Waits for the stream (the NCCL kernels) with the same deadline, watching
  // for errors NCCL reports from its proxy threads (a peer's connection lost).
  void wait_stream(const char* op, Clock::time_point start) {
    wait_until(op, start, [&] { return cudaStreamQuery(stream_); });
  }

  // Polls `query` (cudaStreamQuery or cudaEventQuery) until it says done.
  template <typename Query>
  void wait_until(const char* op, Clock::time_point start, Query&& query) {
    const auto deadline = deadline_after(start, timeout_s_);
    Backoff backoff;
    for (;;) {
      const cudaError_t q = query();
      if (q == cudaSuccess) return;
      if (q != cudaErrorNotReady) {
        (void)cudaGetLastError();
        abort_and_fail(op, std::string("CUDA error ") + cudaGetErrorName(q) + ": " + cudaGetErrorString(q));
      }
      ncclResult_t state = ncclSuccess;
      if (ncclCommGetAsyncError(comm_, &state) == ncclSuccess && state != ncclSuccess && state != ncclInProgress)
        abort_and_fail(op, "NCCL error " + nccl_text(state));
      if (Clock::now() > deadline)
        abort_and_fail(op, "did not complete within " + seconds_text(timeout_s_) +
                               " (timeout_s): another rank may have died, stopped, or be calling a different "
                               "operation");
      backoff.wait();
    }
  }

  // Device memory for staging, grown as needed (never shrunk).
  void* scratch(std::size_t bytes) {
    if (bytes <= scratch_bytes_) return scratch_;
    if (scratch_) cuda("staging", cudaFree(scratch_));
    scratch_ = nullptr;
    scratch_bytes_ = 0;
    const std::size_t want = std::max<std::size_t>(bytes, 1 << 16);
    cuda("staging", cudaMalloc(&scratch_, want));
    scratch_bytes_ = want;
    return scratch_;
  }

  // Orders this communicator's stream after the device work queued so far:
  // the caller's stream through an event, or the whole device.
  void order_after_caller(const char* op) {
    if (!compute_) {
      cuda(op, cudaDeviceSynchronize());
      return;
    }
    if (!ready_) cuda(op, cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
    cuda(op, cudaEventRecord(ready_, compute_));
    cuda(op, cudaStreamWaitEvent(stream_, ready_, 0));
  }

  void check_usable(const char* op) const {
    if (!failure_.empty())
      fail(op, "the communicator failed earlier (" + failure_ + "); every rank must make a new one");
  }

  // Whether every operand is on this GPU (else the blocking call stages them).
  bool on_this_gpu(std::initializer_list<const Tensor*> tensors) const {
    for (const Tensor* t : tensors)
      if (t->bytes() > 0 && t->device() != Device{DeviceType::cuda, device_}) return false;
    return true;
  }

  // Queues a started operation on GPU operands: after the caller's work, with
  // an event for wait(); `keep` holds the operands' memory until then.
  template <typename F>
  CommTicket start(const char* op, std::int64_t bytes_sent, std::vector<Tensor> keep, F&& enqueue) {
    const auto begin = Clock::now();
    check_usable(op);
    for (const Tensor& t : keep)
      if (t.numel() > 0 && !t.defined()) fail(op, "a tensor is undefined: " + t.str());
    cuda(op, cudaSetDevice(device_));
    // Without the caller's stream, order_after_caller synchronises the whole
    // device, which would wait for started NCCL kernels without a timeout:
    // they are waited for first, with it.
    if (!compute_) wait(issued_);
    order_after_caller(op);
    nccl(op, enqueue());
    wait_ready(op, begin, "the operation could not be queued");
    Pending p;
    if (!free_events_.empty()) {
      p.done = free_events_.back();
      free_events_.pop_back();
    } else {
      cuda(op, cudaEventCreateWithFlags(&p.done, cudaEventDisableTiming));
    }
    cuda(op, cudaEventRecord(p.done, stream_));
    p.ticket = ++issued_;
    p.op = op;
    p.bytes_sent = bytes_sent;
    p.start = begin;
    p.keep = std::move(keep);
    pending_.push_back(std::move(p));
    return issued_;
  }

  // One operation, start to end: checks and places the operands, orders it
  // after the device's earlier work (order_after_caller), uploads host
  // inputs, enqueues `enqueue`, waits for completion with the timeout,
  // downloads host outputs, and counts `bytes_sent`. Started operations
  // complete first.
  template <typename F>
  void run(const char* op, std::int64_t bytes_sent, std::initializer_list<Operand*> operands, F&& enqueue) {
    wait(issued_);
    const auto start = Clock::now();
    check_usable(op);
    std::size_t staged = 0;
    for (Operand* o : operands) {
      const Tensor& t = *o->tensor;
      if (t.numel() > 0 && !t.defined()) fail(op, "a tensor is undefined: " + t.str());
      if (t.device().is_cpu()) {
        staged += (t.bytes() + 255) / 256 * 256;
      } else if (t.device() != Device{DeviceType::cuda, device_}) {
        fail(op, t.str() + " is not on this communicator's GPU (cuda:" + std::to_string(device_) +
                     "); make the tensors with the cuda backend on the device of the local rank, or set "
                     "plugins.options.nccl.device");
      }
    }
    if (operands.size() > 0 &&
        std::all_of(operands.begin(), operands.end(), [](const Operand* o) { return o->tensor->bytes() == 0; })) {
      record(op, 0, seconds_since(start));  // nothing to move: every rank has the same sizes
      return;
    }
    cuda(op, cudaSetDevice(device_));
    char* area = static_cast<char*>(scratch(staged + sizeof(int)));
    for (Operand* o : operands) {
      const Tensor& t = *o->tensor;
      if (!t.device().is_cpu()) {
        o->device = t.data();
        continue;
      }
      o->device = area;
      if (o->in && t.bytes() > 0) cuda(op, cudaMemcpyAsync(area, t.data(), t.bytes(), cudaMemcpyHostToDevice, stream_));
      area += (t.bytes() + 255) / 256 * 256;
    }
    // Device tensors may still be written by kernels queued before the call.
    order_after_caller(op);
    nccl(op, enqueue());
    wait_ready(op, start, "the operation could not be queued");
    wait_stream(op, start);
    for (Operand* o : operands) {
      const Tensor& t = *o->tensor;
      if (t.device().is_cpu() && o->out && t.bytes() > 0) {
        cuda(op, cudaMemcpyAsync(t.data(), o->device, t.bytes(), cudaMemcpyDeviceToHost, stream_));
        cuda(op, cudaStreamSynchronize(stream_));
      }
    }
    record(op, bytes_sent, seconds_since(start));
  }

  // reduce_scatter: `in` is size() parts of out's size, `out` separate from
  // it or this rank's part of it (NCCL's in place).
  void check_reduce_scatter(const char* op, const Tensor& in, const Tensor& out) const {
    same_dtype(op, in, out);
    if (in.numel() != static_cast<std::int64_t>(size_) * out.numel())
      fail(op, "'in' must have size() * out.numel() = " + std::to_string(size_ * out.numel()) + " elements, got " +
                   in.str() + " for out " + out.str());
    disjoint_or_part(op, out, in, "out", "in");
  }

  // all_gather: `out` is size() parts of in's size, `in` separate from it or
  // this rank's part of it.
  void check_all_gather(const char* op, const Tensor& in, const Tensor& out) const {
    same_dtype(op, in, out);
    if (out.numel() != static_cast<std::int64_t>(size_) * in.numel())
      fail(op, "'out' must have size() * in.numel() = " + std::to_string(size_ * in.numel()) + " elements, got " +
                   out.str() + " for in " + in.str());
    disjoint_or_part(op, in, out, "in", "out");
  }

  void same_dtype(const char* op, const Tensor& in, const Tensor& out) const {
    if (in.dtype() != out.dtype()) fail(op, "'in' is " + in.str() + " but 'out' is " + out.str() + ": dtypes differ");
  }

  // `part` must be separate from `whole`, or exactly this rank's part of it
  // on the GPU (NCCL's in-place form).
  void disjoint_or_part(const char* op, const Tensor& part, const Tensor& whole, const char* pn, const char* wn) const {
    if (part.bytes() == 0 || whole.bytes() == 0 || part.device() != whole.device()) return;
    const char* p = static_cast<const char*>(part.data());
    const char* w = static_cast<const char*>(whole.data());
    if (p >= w + whole.bytes() || w >= p + part.bytes()) return;
    if (p == w + static_cast<std::size_t>(rank_) * part.bytes()) return;
    fail(op, std::string("'") + pn + "' overlaps '" + wn + "' but is not this rank's part of it");
  }

  void check_rank(const char* op, const char* what, int r) const {
    if (r < 0 || r >= size_)
      fail(op, std::string(what) + " " + std::to_string(r) + " is not a rank of this job (ranks 0 to " +
                   std::to_string(size_ - 1) + ", size " + std::to_string(size_) + ")");
  }

  // NCCL matches a pair's sends and receives in order: tags are checked but
  // not used for matching.
  void check_peer(const char* op, int peer, int tag) const {
    check_rank(op, "peer", peer);
    if (peer == rank_)
      fail(op, "peer " + std::to_string(peer) + " is this rank: a blocking " + op + " to itself would hang");
    if (tag < 0) fail(op, "tag " + std::to_string(tag) + " is negative");
  }

  ncclDataType_t reduce_type(const char* op, const Tensor& t) const {
    switch (t.dtype()) {
      case DType::f32:
        return ncclFloat32;
      case DType::f64:
        return ncclFloat64;
      case DType::i32:
        return ncclInt32;
      case DType::i64:
        return ncclInt64;
      case DType::bf16:
        return ncclBfloat16;
      case DType::f16:
        return ncclFloat16;
      case DType::u16:
        break;
    }
    fail(op, t.str() + ": reductions take f32, f64, i32, i64, bf16 or f16");
  }

  ncclRedOp_t nccl_op(const char* op, ReduceOp reduce) const {
    switch (reduce) {
      case ReduceOp::sum:
        return ncclSum;
      case ReduceOp::avg:
        return ncclAvg;
      case ReduceOp::max:
        return ncclMax;
      case ReduceOp::min:
        return ncclMin;
    }
    fail(op, "unknown reduce operation " + std::to_string(static_cast<int>(reduce)));
  }

  int device_;
  int rank_;
  int size_;
  int local_rank_;
  double timeout_s_;
  bool over_mpi_;
  cudaStream_t stream_ = nullptr;
  cudaStream_t compute_ = nullptr;  // the caller's (set_stream); null: synchronise the device
  cudaEvent_t ready_ = nullptr;     // recorded on compute_ before each operation
  // Started operations, oldest first, with their completion events.
  struct Pending {
    CommTicket ticket = 0;
    cudaEvent_t done = nullptr;
    const char* op = "";
    std::int64_t bytes_sent = 0;
    Clock::time_point start;
    std::vector<Tensor> keep;
  };
  std::deque<Pending> pending_;
  std::vector<cudaEvent_t> free_events_;
  CommTicket issued_ = 0;
  ncclComm_t comm_ = nullptr;
  void* scratch_ = nullptr;
  std::size_t scratch_bytes_ = 0;
  std::string failure_;  // the first failure; the communicator is aborted
};

// Rank, size and NCCL's unique id shared by every rank.
struct Rendezvous {
  int rank = 0;
  int size = 1;
  ncclUniqueId id{};
};

void new_unique_id(ncclUniqueId& id) {
  const ncclResult_t r = ncclGetUniqueId(&id);
  if (r != ncclSuccess)
    throw Error(std::string("ncclGetUniqueId failed: ") + ncclGetErrorString(r) + ": " + ncclGetLastError(nullptr));
}

Rendezvous mpi_rendezvous(const LaunchInfo& launch) {
  MpiBootstrap mpi;
  if (launch.launcher != Launcher::none && mpi.size() != launch.world_size)
    throw Error("MPI sees " + std::to_string(mpi.size()) + " process" + (mpi.size() == 1 ? "" : "es") +
                " but the launch environment says " + launch.str() +
                ": under srun, MPI needs --mpi=pmix (or pmi2); otherwise use bootstrap = \"tcp\"");
  Rendezvous r;
  r.rank = mpi.rank();
  r.size = mpi.size();
  if (r.rank == 0) new_unique_id(r.id);
  mpi.broadcast(&r.id, sizeof r.id);
  return r;
}

Rendezvous tcp_rendezvous_run(const LaunchInfo& launch, std::optional<TcpRendezvous>& tcp) {
  Rendezvous r;
  r.rank = launch.rank;
  r.size = launch.world_size;
  if (r.rank == 0) new_unique_id(r.id);
  if (tcp) tcp->broadcast(&r.id, sizeof r.id);
  return r;
}

// The TCP rendezvous of a job of several ranks, checked (MASTER_ADDR and
// MASTER_PORT set and valid) but not yet run.
TcpRendezvous tcp_rendezvous(const LaunchInfo& launch, double timeout_s) {
  if (launch.master_addr.empty() || launch.master_port.empty())
    throw Error(
        "the TCP bootstrap needs MASTER_ADDR and MASTER_PORT (the host of rank 0 and a free port, the "
        "same on every rank; under Slurm: export MASTER_ADDR=$(scontrol show hostnames "
        "\"$SLURM_JOB_NODELIST\" | head -n 1) MASTER_PORT=29500), or start the job with mpirun (or srun "
        "--mpi=pmix) for the MPI bootstrap");
  return TcpRendezvous(launch.master_addr, launch.master_port, launch.rank, launch.world_size, timeout_s);
}

Communicator* make_nccl_comm(const Options& options) {
  const std::string bootstrap = options.get_string("bootstrap", "auto", {"auto", "mpi", "tcp"});
  const double timeout_s = options.get_double("timeout_s", 300.0, 0.001, 7.0 * 24 * 3600);
  const bool has_device = options.has("device");
  int device = static_cast<int>(options.get_int("device", 0, 0, 4095));
  options.reject_unknown();

  // Configuration errors first, GPU or not.
  const LaunchInfo launch = detect_launch();
  const bool use_mpi = bootstrap == "mpi" || (bootstrap == "auto" && launch.mpi_launched() && mpi_bootstrap_built());
  const std::string where = "comm 'nccl' (" + launch.str() + ", bootstrap " + (use_mpi ? "mpi" : "tcp") + "): ";
  std::optional<TcpRendezvous> tcp;
  try {
    if (!use_mpi && launch.world_size > 1) tcp.emplace(tcp_rendezvous(launch, timeout_s));
  } catch (const Error& err) {
    throw Error(where + err.what());
  }

  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    throw DeviceUnavailable(std::string("comm 'nccl': no CUDA device available (cudaGetDeviceCount: ") +
                            cudaGetErrorString(e) + ")");
  }
  if (count == 0) throw DeviceUnavailable("comm 'nccl': no CUDA device available (cudaGetDeviceCount found none)");
  if (!has_device) device = launch.local_rank % count;
  if (device >= count)
    throw DeviceUnavailable("comm 'nccl': CUDA device " + std::to_string(device) + " (from " + options.where("device") +
                            ") is not available: " + std::to_string(count) + " visible");

  Rendezvous r;
  try {
    r = use_mpi ? mpi_rendezvous(launch) : tcp_rendezvous_run(launch, tcp);
  } catch (const Error& err) {
    throw Error(where + err.what());
  }
  spdlog::debug("comm 'nccl': {}, cuda:{}, bootstrap {}, NCCL {}.{}.{} headers", launch.str(), device,
                use_mpi ? "mpi" : "tcp", NCCL_MAJOR, NCCL_MINOR, NCCL_PATCH);
  for (const std::string& note : launch.notes) spdlog::debug("comm 'nccl': launch environment: {}", note);
  return new NcclCommunicator(device, r.rank, r.size, launch.local_rank, r.id, timeout_s, use_mpi);
}

}  // namespace
}  // namespace neox

NEOX_PLUGIN(comm, "nccl", "1.0", "NCCL communicator (one GPU per rank; mpirun, srun or torchrun-style launch)",
            &neox::make_nccl_comm)
