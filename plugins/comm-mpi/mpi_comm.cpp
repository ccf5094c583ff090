// SPDX-License-Identifier: Apache-2.0
// comm plugin `mpi`: collectives over MPI among the processes of one job.
//
// Start the job with mpirun (`mpirun -np 4 neox train --config X`). The first
// communicator made in a process initialises MPI (MPI_Init_thread,
// serialized: one thread at a time calls MPI) unless the program already did;
// MPI is then finalised once, at process exit, and only if this plugin
// initialised it. Each communicator works on its own duplicates of
// MPI_COMM_WORLD with MPI_ERRORS_RETURN, so every failing MPI call becomes a
// neox::Error naming the rank, the operation and MPI's message.
//
// Buffers are host tensors. Reductions (all_reduce, reduce_scatter) take
// f32, f64, i32 and i64; `avg` is a sum divided by size() (integer division
// for integers). Data movement (all_gather, broadcast, send, recv) also takes
// bf16, f16 and u16, moved as 16-bit words. Every completed operation is
// counted (Communicator::stats()) in the ring-algorithm bytes of
// neox/communicator.h, with its wall time.
//
// Option ([plugins.options.mpi]): timeout_s, seconds > 0, default 300.
//
// Overlap. The first *_start call starts a thread that from then on makes
// every MPI call of the communicator, in the order the operations were
// started or called (a blocking call queues its operation and waits for
// it), so the caller computes while the thread communicates. MPI sees one
// thread at a time (MPI_THREAD_SERIALIZED). Where MPI was initialised by the
// program with less thread support, *_start runs the operation at once and
// overlaps() is false. The thread's results reach stats() when the caller
// waits for them.
//
// Algorithms. The collectives are made here of non-blocking point-to-point
// messages (MPI_Isend, MPI_Irecv; MPI_Reduce_local for the arithmetic), so
// that no call blocks inside MPI (see Faults). MPI's own non-blocking
// collectives (Open MPI's libnbc) would do, but they are up to 40 times
// slower than the blocking ones for 4 KiB all-reduces, and their in-place
// all-reduce is a binomial tree at every size. Small messages ((N-1) x bytes
// <= kDirectBytes) go directly from every rank to every rank in one step,
// reduced on each rank in rank order; larger ones use the bandwidth-optimal
// rings (all_reduce = reduce-scatter + all-gather, 2(N-1) steps of n/N
// bytes; broadcast = a chain from the root, pipelined in kSegmentBytes
// messages). Either way the result of a reduction is bitwise the same on
// every rank. Barriers are MPI_Ibarrier. Collectives use their own
// communicator, tagged with their sequence number, so they never match the
// messages of send/recv or of another collective.
//
// Faults. No operation waits forever. Its messages are polled with
// MPI_Testsome: busily at first (kSpin, plus the time the bytes still to
// come need at kSpinBytesPerSecond, again after each message that arrives),
// then with naps that grow to kMaxNap, so that a rank waiting long for a
// slow peer leaves its core to others. Operations are numbered: collectives
// (barrier included) from 1 on each communicator, the same on every rank of
// a correct program; sends and receives separately. When an operation has
// not completed after timeout_s, the rank asks every other rank where it
// is, on a third duplicate of MPI_COMM_WORLD (the control channel); a rank
// answers whenever it is itself waiting in an operation of this
// communicator. After a grace period (kGraceSeconds, at most timeout_s) it
// throws neox::Error naming the operation and its number, this rank, the
// ranks it was waiting for, and the ranks that did not arrive: "not
// responding (dead, stopped, or busy outside the communicator)" for those
// that did not answer, "behind" (or "ahead") with where they are for those
// that did. The communicator has then failed: later calls throw at once,
// and at exit the process ends the whole job with MPI_Abort instead of
// MPI_Finalize, which would wait for the missing ranks forever. Exit
// handlers run after main has printed the error, so the message comes out
// first. A rank killed by a signal is normally noticed by mpirun first,
// which ends the job naming the rank (docs/reference/distributed.md).
#include <dlfcn.h>
#include <mpi.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "neox/communicator.h"
#include "neox/error.h"
#include "neox/launch.h"
#include "neox/options.h"
#include "neox/plugin.h"

namespace neox {
namespace {

using Clock = std::chrono::steady_clock;

constexpr double kDefaultTimeoutSeconds = 300.0;
// How long a rank that timed out waits for the others to say where they are
// (at most timeout_s). Waiting ranks answer within a nap (kMaxNap).
constexpr double kGraceSeconds = 2.0;
// Polling: busy for kSpin plus the time the bytes still to come need at
// kSpinBytesPerSecond (a transfer in progress needs MPI_Test often to move),
// then naps from kFirstNap, doubling up to kMaxNap.
constexpr auto kSpin = std::chrono::microseconds(200);
constexpr double kSpinBytesPerSecond = 1e9;
constexpr auto kFirstNap = std::chrono::microseconds(10);
constexpr auto kMaxNap = std::chrono::microseconds(1000);
// The clock is read once every kTestsPerClock tests while busy: on virtual
// machines reading it can cost more than a test.
constexpr unsigned kTestsPerClock = 64;
// Collectives move (N-1) x bytes <= kDirectBytes from every rank to every
// rank in one step, larger ones around a ring.
constexpr std::int64_t kDirectBytes = 64 << 10;
// Messages are at most this long (a finer pipeline, and MPI's int counts).
constexpr std::int64_t kSegmentBytes = 1 << 20;
// Tags of the control channel.
constexpr int kQueryTag = 1;
constexpr int kAnswerTag = 2;

enum class OpCode : std::int64_t { all_reduce = 1, reduce_scatter, all_gather, broadcast, barrier, send, recv };

// The names are the keys of CommStats::ops.
const char* op_name(OpCode code) {
  switch (code) {
    case OpCode::all_reduce:
      return "all_reduce";
    case OpCode::reduce_scatter:
      return "reduce_scatter";
    case OpCode::all_gather:
      return "all_gather";
    case OpCode::broadcast:
      return "broadcast";
    case OpCode::barrier:
      return "barrier";
    case OpCode::send:
      return "send";
    case OpCode::recv:
      return "recv";
  }
  return "an unknown operation";
}

bool is_collective(OpCode code) { return code != OpCode::send && code != OpCode::recv; }

// Where a rank is: what it answers on the control channel (kPositionWords
// int64 words).
struct Position {
  std::int64_t op = 0;           // the OpCode it waits in
  std::int64_t collectives = 0;  // collectives it started, the current one included
  std::int64_t p2p = 0;          // sends and receives it started, the current one included
  std::int64_t peer = -1;        // of a send or receive
  std::int64_t tag = -1;
};
constexpr int kPositionWords = 5;
static_assert(sizeof(Position) == kPositionWords * sizeof(std::int64_t), "Position travels as int64 words");

// "all_reduce #5", "recv #2 from rank 1 (tag 7), after collective #4".
std::string describe(const Position& p) {
  const auto code = static_cast<OpCode>(p.op);
  if (is_collective(code)) return std::string(op_name(code)) + " #" + std::to_string(p.collectives);
  return std::string(op_name(code)) + " #" + std::to_string(p.p2p) + (code == OpCode::send ? " to" : " from") +
         " rank " + std::to_string(p.peer) + " (tag " + std::to_string(p.tag) + "), after collective #" +
         std::to_string(p.collectives);
}

// Where a rank at `p` is relative to collective number `seq`.
std::string relation(const Position& p, std::int64_t seq) {
  const bool in_collective = is_collective(static_cast<OpCode>(p.op));
  const std::int64_t completed = in_collective ? p.collectives - 1 : p.collectives;
  if (completed >= seq) return "ahead (it got past this collective)";
  if (in_collective && p.collectives == seq)
    return "in another collective with the same number (the ranks' calls differ)";
  return "behind";
}

std::string join(const std::vector<std::string>& parts, const char* separator) {
  std::string s;
  for (const auto& p : parts) s += (s.empty() ? "" : separator) + p;
  return s;
}

std::string seconds_text(double s) {
  std::ostringstream os;
  os << s;
  return os.str();
}

std::string mpi_message(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) return "MPI error code " + std::to_string(code);
  return std::string(text, static_cast<std::size_t>(len));
}

// Whether this plugin initialised MPI (and so finalises it).
std::atomic<bool> g_initialised_here{false};
// Set when a communicator fails: the process then ends the job at exit.
std::atomic<bool> g_job_failed{false};
std::atomic<bool> g_exit_handler_registered{false};

// What MPI may still read or write after a failure: the buffers of the
// operation that timed out, the scratch memory and the control messages in
// flight. Kept until the process ends (never freed).
struct Leftovers {
  std::vector<Tensor> tensors;
  std::vector<std::shared_ptr<const void>> memory;
};
Leftovers& leftovers() {
  static auto* l = new Leftovers;
  return *l;
}

// At exit: MPI_Abort after a failure (MPI_Finalize would wait for the
// missing ranks), else MPI_Finalize when this plugin initialised MPI.
void end_mpi() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  if (g_job_failed) {
    std::fflush(nullptr);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  if (g_initialised_here) MPI_Finalize();
}

// Keeps a loaded library (found through one of its symbols) in memory until
// the process ends, and optionally makes its symbols global.
void pin_library(const void* symbol, int extra_flags) {
  Dl_info info{};
  if (dladdr(symbol, &info) == 0 || info.dli_fname == nullptr) return;
  // RTLD_NOLOAD: only takes another reference to the already loaded library.
  dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE | extra_flags);
}

void register_exit_handler() {
  if (g_exit_handler_registered.exchange(true)) return;
  // The registry never unloads a plugin, but this one may be loaded by other
  // means (a test's own dlopen): pin it, so that the exit handler stays
  // mapped whoever loaded it.
  pin_library(reinterpret_cast<const void*>(&end_mpi), 0);
  std::atexit(end_mpi);
}

// Registered with on_job_failed_alone (neox/launch.h): this process failed
// alone, so it ends the job when it exits, as after a communicator failure.
void end_job_at_exit() {
  g_job_failed = true;
  register_exit_handler();
}

// The launcher's variables as they were before MPI_Init, which adds its own
// (an MPI singleton sets PMIX_RANK): read once per process, the error text
// instead when they are invalid.
struct LaunchBeforeInit {
  LaunchInfo info;
  std::string error;
};
const LaunchBeforeInit& launch_before_init() {
  static const LaunchBeforeInit launch = [] {
    LaunchBeforeInit l;
    try {
      l.info = detect_launch();
    } catch (const Error& e) {
      l.error = e.what();
    }
    return l;
  }();
  return launch;
}

// Initialises MPI once per process unless the program did.
void ensure_mpi_initialised() {
  int initialised = 0;
  MPI_Initialized(&initialised);
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) throw Error("comm 'mpi': MPI was already finalised in this process: it cannot be initialised again");
  (void)launch_before_init();
  if (initialised) return;
  // Pin libmpi with its symbols global, which Open MPI's own dlopen'ed
  // components expect, so that MPI outlives the registry.
  pin_library(reinterpret_cast<const void*>(&MPI_Init_thread), RTLD_GLOBAL);
  int provided = 0;
  const int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
  if (rc != MPI_SUCCESS) throw Error("comm 'mpi': MPI_Init_thread failed: " + mpi_message(rc));
  g_initialised_here = true;
  register_exit_handler();
}

// Rank r's part of `numel` elements split into `parts` nearly equal parts:
// [offset(r), offset(r) + count(r)).
struct Parts {
  std::int64_t numel;
  int parts;
  std::int64_t offset(int r) const { return r * (numel / parts) + std::min<std::int64_t>(r, numel % parts); }
  std::int64_t count(int r) const { return numel / parts + (r < numel % parts ? 1 : 0); }
};

// The MPI arithmetic of a reduction.
struct Reduction {
  MPI_Datatype type;
  MPI_Op op;
  std::size_t esize;
};

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator(double timeout_s, std::string timeout_key)
      : timeout_s_(timeout_s),
        timeout_(std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s))),
        grace_(std::chrono::duration_cast<Clock::duration>(
            std::chrono::duration<double>(std::min(kGraceSeconds, timeout_s)))),
        timeout_key_(std::move(timeout_key)) {
    ensure_mpi_initialised();
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    check_launch();
    if (size_ > 1) on_job_failed_alone(&end_job_at_exit);
    // Every rank must make its communicator: one that never does is an
    // error after timeout_s, not a hang.
    comm_ = duplicate();
    coll_ = duplicate();
    ctl_ = duplicate();
    MPI_Comm node = MPI_COMM_NULL;
    call("init", MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node));
    call("init", MPI_Comm_rank(node, &local_rank_));
    MPI_Comm_free(&node);
    int flag = 0;
    int* ub = nullptr;
    call("init", MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &ub, &flag));
    tag_ub_ = flag && ub ? *ub : 32767;  // the standard's guaranteed minimum
    int level = MPI_THREAD_SINGLE;
    call("init", MPI_Query_thread(&level));
    can_overlap_ = level >= MPI_THREAD_SERIALIZED;
  }

  ~MpiCommunicator() override {
    stop_worker();
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    // Answers still in flight (to ranks that went): MPI keeps sending them.
    for (auto& a : answers_) {
      MPI_Request_free(&a.request);
      leftovers().memory.push_back(std::move(a.position));
    }
    // After a failure requests are still pending on these communicators:
    // leave them to MPI_Abort at exit.
    if (!failed_.empty()) return;
    for (MPI_Comm* c : {&ctl_, &coll_, &comm_})
      if (*c != MPI_COMM_NULL) MPI_Comm_free(c);
  }

  std::string name() const override { return "mpi"; }
  int rank() const override { return rank_; }

  // The launcher's variables must describe the job MPI_Init found. Started
  // without an MPI launcher (RANK and WORLD_SIZE set by hand or by
  // torchrun), every process is an MPI job of its own (a singleton): it
  // would train alone, and N of them would write one run directory.
  void check_launch() const {
    const LaunchBeforeInit& before = launch_before_init();
    if (!before.error.empty()) throw Error("comm 'mpi': " + before.error);
    const LaunchInfo& launch = before.info;
    if (launch.world_size == size_ && launch.rank == rank_) return;
    throw Error("comm 'mpi': this process is " + launch.str() + ", but MPI_Init found rank " + std::to_string(rank_) +
                " of " + std::to_string(size_) +
                (size_ == 1 ? " (a process of its own: it was not started by an MPI launcher)" : std::string()) +
                "; start the job with mpirun or srun --mpi=pmix, or, with RANK, WORLD_SIZE, MASTER_ADDR and "
                "MASTER_PORT, use plugins.comm = \"nccl\" (its TCP bootstrap)");
  }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }

  void all_reduce(Tensor& buffer, ReduceOp op) override {
    run_blocking([&] { do_all_reduce(buffer, op); });
  }
  void reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op) override {
    run_blocking([&] { do_reduce_scatter(in, out, op); });
  }
  void all_gather(const Tensor& in, Tensor& out) override {
    run_blocking([&] { do_all_gather(in, out); });
  }
  void broadcast(Tensor& buffer, int root) override {
    run_blocking([&] { do_broadcast(buffer, root); });
  }
  void send(const Tensor& buffer, int peer, int tag) override {
    run_blocking([&] { do_send(buffer, peer, tag); });
  }
  void recv(Tensor& buffer, int peer, int tag) override {
    run_blocking([&] { do_recv(buffer, peer, tag); });
  }
  void barrier() override {
    run_blocking([&] { do_barrier(); });
  }

  // The tensors are copied into the queued operation: the views keep their
  // memory alive until it has run.
  CommTicket all_reduce_start(Tensor& buffer, ReduceOp op) override {
    if (!can_overlap_) return Communicator::all_reduce_start(buffer, op);
    return enqueue([this, buffer, op]() mutable { do_all_reduce(buffer, op); });
  }
  CommTicket reduce_scatter_start(const Tensor& in, Tensor& out, ReduceOp op) override {
    if (!can_overlap_) return Communicator::reduce_scatter_start(in, out, op);
    return enqueue([this, in, out, op]() mutable { do_reduce_scatter(in, out, op); });
  }
  CommTicket all_gather_start(const Tensor& in, Tensor& out) override {
    if (!can_overlap_) return Communicator::all_gather_start(in, out);
    return enqueue([this, in, out]() mutable { do_all_gather(in, out); });
  }
  bool overlaps() const override { return can_overlap_; }

  void wait(CommTicket ticket) override {
    if (ticket == 0) return;
    std::unique_lock lock(mutex_);
    if (ticket > issued_)
      throw Error(prefix() + "wait: ticket " + std::to_string(ticket) + " was never issued (last " +
                  std::to_string(issued_) + ")");
    done_cv_.wait(lock, [&] { return completed_ >= ticket; });
    // The thread's completed operations, into stats(), in order.
    for (const Done& d : done_) record(op_name(d.code), d.bytes, d.seconds);
    done_.clear();
    // The first error of an operation up to `ticket`.
    if (!errors_.empty() && errors_.front().first <= ticket) {
      std::exception_ptr e = std::move(errors_.front().second);
      errors_.pop_front();
      lock.unlock();
      std::rethrow_exception(e);
    }
  }

 private:
  // ---- The communication thread

  // Runs `work` here, or on the thread (after everything queued) once it exists.
  template <typename F>
  void run_blocking(F&& work) {
    if (!worker_.joinable()) {
      work();
      return;
    }
    wait(enqueue(std::function<void()>(std::forward<F>(work))));
  }

  CommTicket enqueue(std::function<void()> work) {
    std::lock_guard lock(mutex_);
    if (!worker_.joinable()) worker_ = std::thread([this] { work_loop(); });
    queue_.push_back({++issued_, std::move(work)});
    work_cv_.notify_one();
    return issued_;
  }

  void work_loop() {
    for (;;) {
      Job job;
      {
        std::unique_lock lock(mutex_);
        work_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;
        job = std::move(queue_.front());
        queue_.pop_front();
      }
      std::exception_ptr error;
      try {
        job.work();
      } catch (...) {
        error = std::current_exception();
      }
      job.work = nullptr;  // drops the operation's tensors before it counts as complete
      {
        std::lock_guard lock(mutex_);
        completed_ = job.ticket;
        // Moved: the caller's thread alone then holds (and frees) the exception.
        if (error) errors_.emplace_back(job.ticket, std::move(error));
      }
      done_cv_.notify_all();
    }
  }

  // Lets the queued operations finish (each has its deadline), then ends the thread.
  void stop_worker() noexcept {
    if (!worker_.joinable()) return;
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    work_cv_.notify_one();
    worker_.join();
  }

  void do_all_reduce(Tensor& buffer, ReduceOp op) {
    Op o = begin(OpCode::all_reduce, &buffer);
    check_host(o, "buffer", buffer);
    const Reduction red = reduction(o, buffer, op);
    start(o);
    char* data = static_cast<char*>(buffer.data());
    const std::int64_t n = static_cast<std::int64_t>(buffer.bytes());
    if (direct(n)) {
      direct_reduce(
          o, red, n, [&](int) { return data; }, data);
    } else {
      const Parts parts{buffer.numel(), size_};
      ring_reduce_scatter(o, red, data, parts, [&](int part) { return data + parts.offset(part) * red.esize; });
      ring_all_gather(o, data, parts, red.esize);
    }
    if (op == ReduceOp::avg) divide(buffer);
    finish(o, ring_all_reduce_bytes(n, size_));
  }

  void do_reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op) {
    Op o = begin(OpCode::reduce_scatter, &in, &out);
    check_host(o, "in", in);
    check_host(o, "out", out);
    check_same_dtype(o, in, out);
    if (in.numel() != static_cast<std::int64_t>(size_) * out.numel())
      fail(o, "'in' must have size() * out.numel() = " + std::to_string(size_ * out.numel()) + " elements, got " +
                  in.str() + " for out " + out.str());
    const Reduction red = reduction(o, in, op);
    if (overlaps(in, out)) fail(o, "'in' and 'out' overlap: they must be separate buffers");
    start(o);
    const char* src = static_cast<const char*>(in.data());
    char* dst = static_cast<char*>(out.data());
    const std::int64_t part = static_cast<std::int64_t>(out.bytes());
    if (direct(part)) {
      direct_reduce(
          o, red, part, [&](int q) { return src + q * part; }, dst);
    } else {
      // Partial sums in scratch; the last one, this rank's part, in `out`.
      char* partial = scratch(part);
      ring_reduce_scatter(o, red, src, Parts{in.numel(), size_}, [&](int p) { return p == rank_ ? dst : partial; });
    }
    if (op == ReduceOp::avg) divide(out);
    finish(o, ring_gather_bytes(static_cast<std::int64_t>(in.bytes()), size_));
  }

  void do_all_gather(const Tensor& in, Tensor& out) {
    Op o = begin(OpCode::all_gather, &out, &in);
    check_host(o, "in", in);
    check_host(o, "out", out);
    check_same_dtype(o, in, out);
    if (out.numel() != static_cast<std::int64_t>(size_) * in.numel())
      fail(o, "'out' must have size() * in.numel() = " + std::to_string(size_ * in.numel()) + " elements, got " +
                  out.str() + " for in " + in.str());
    const std::size_t esize = dtype_size(in.dtype());
    const std::int64_t part = static_cast<std::int64_t>(in.bytes());
    char* dst = static_cast<char*>(out.data());
    // `in` may already be this rank's part of `out` (in place) or separate.
    char* mine = dst + rank_ * part;
    if (in.data() != mine && overlaps(in, out)) fail(o, "'in' overlaps 'out' but is not this rank's part of it");
    start(o);
    if (in.data() != mine && part > 0) std::memcpy(mine, in.data(), static_cast<std::size_t>(part));
    if (direct(part)) {
      exchange_with_all(
          o, part, [&](int) { return mine; }, [&](int q) { return dst + q * part; });
    } else {
      ring_all_gather(o, dst, Parts{out.numel(), size_}, esize);
    }
    finish(o, ring_gather_bytes(static_cast<std::int64_t>(out.bytes()), size_));
  }

  void do_broadcast(Tensor& buffer, int root) {
    Op o = begin(OpCode::broadcast, &buffer);
    check_rank(o, "root", root);
    check_host(o, "buffer", buffer);
    start(o);
    char* data = static_cast<char*>(buffer.data());
    const std::int64_t n = static_cast<std::int64_t>(buffer.bytes());
    const int next = (rank_ + 1) % size_, prev = prev_of(rank_);
    // The chain from the root ends at the root's predecessor, which sends nothing.
    const bool last_of_chain = size_ == 1 || rank_ == prev_of(root);
    if (direct(n)) {
      if (rank_ == root) {
        for (int q = 0; q < size_; ++q)
          if (q != root) post_send(data, n, q, o);
      } else {
        post_recv(data, n, root, o);
      }
      wait(o);
    } else if (rank_ == root) {
      post_send(data, n, next, o);
      wait(o);
    } else {
      // The messages from the predecessor go on to the successor as they
      // arrive, in order (the successor matches them in order). The
      // receives are the first requests, one per segment.
      post_recv(data, n, prev, o);
      const std::size_t segments = requests_.size();
      std::size_t forwarded = 0;
      wait(o, [&](std::size_t) {
        for (; !last_of_chain && forwarded < segments && requests_[forwarded] == MPI_REQUEST_NULL; ++forwarded) {
          const std::int64_t at = static_cast<std::int64_t>(forwarded) * kSegmentBytes;
          post_send(data + at, std::min(kSegmentBytes, n - at), next, o);
        }
      });
    }
    finish(o, last_of_chain ? 0 : n);
  }

  void do_send(const Tensor& buffer, int peer, int tag) {
    Op o = begin(OpCode::send, &buffer, nullptr, peer, tag);
    check_peer(o);
    check_host(o, "buffer", buffer);
    const MPI_Datatype type = move_type(o, buffer);
    check_count(o, buffer.numel());
    start(o);
    post(o, comm_, buffer.data(), static_cast<int>(buffer.numel()), type, peer, tag, true,
         static_cast<std::int64_t>(buffer.bytes()));
    wait(o);
    finish(o, static_cast<std::int64_t>(buffer.bytes()));
  }

  void do_recv(Tensor& buffer, int peer, int tag) {
    Op o = begin(OpCode::recv, &buffer, nullptr, peer, tag);
    check_peer(o);
    check_host(o, "buffer", buffer);
    const MPI_Datatype type = move_type(o, buffer);
    check_count(o, buffer.numel());
    start(o);
    post(o, comm_, buffer.data(), static_cast<int>(buffer.numel()), type, peer, tag, false,
         static_cast<std::int64_t>(buffer.bytes()));
    MPI_Status status{};
    wait(o, [&](std::size_t) { status = last_status_; });
    int got = 0;
    call(o, MPI_Get_count(&status, type, &got));
    if (got != buffer.numel())
      fail(o, "from rank " + std::to_string(peer) + " (tag " + std::to_string(tag) + "): received " +
                  std::to_string(got) + " elements into " + buffer.str() + ": sizes differ");
    finish(o, 0);
  }

  void do_barrier() {
    Op o = begin(OpCode::barrier, nullptr);
    start(o);
    call(o, MPI_Ibarrier(coll_, add_message({-1, false, 0})));
    wait(o);
    finish(o, 0);
  }

  // One operation in progress.
  struct Op {
    OpCode code;
    std::int64_t bytes = 0;                  // of its (larger) buffer
    std::array<const Tensor*, 2> buffers{};  // MPI may still use them after a timeout
    int peer = -1, tag = -1;                 // send, recv
    std::int64_t seq = 0;                    // its number (start())
    int coll_tag = 0;                        // the tag of a collective's messages
    Clock::time_point start, deadline;
  };

  // A message of the operation in progress (its request in requests_).
  struct Message {
    int peer = -1;  // -1: not a message to or from one rank (a barrier)
    bool send = false;
    std::int64_t bytes = 0;
  };

  // An answer on the control channel and its request.
  struct Answer {
    std::shared_ptr<Position> position;
    MPI_Request request = MPI_REQUEST_NULL;
  };

  std::string prefix() const {
    return "comm 'mpi' (rank " + std::to_string(rank_) + " of " + std::to_string(size_) + "): ";
  }

  // Starts an operation on `main` and `other` (either may be null); throws
  // if this communicator has failed before.
  Op begin(OpCode code, const Tensor* main, const Tensor* other = nullptr, int peer = -1, int tag = -1) const {
    if (!failed_.empty())
      throw Error(
          prefix() + op_name(code) +
          ": this communicator failed earlier and cannot be used again (the job must be restarted): " + failed_);
    Op o;
    o.code = code;
    for (const Tensor* t : {main, other})
      if (t != nullptr) o.bytes = std::max(o.bytes, static_cast<std::int64_t>(t->bytes()));
    o.buffers = {main, other};
    o.peer = peer;
    o.tag = tag;
    o.start = Clock::now();
    return o;
  }

  // After the arguments are checked: numbers the operation and starts its clock.
  void start(Op& o) {
    o.seq = is_collective(o.code) ? ++collectives_ : ++p2p_;
    o.coll_tag = static_cast<int>(o.seq % (static_cast<std::int64_t>(tag_ub_) + 1));
    o.deadline = o.start + timeout_;
    position_ = {static_cast<std::int64_t>(o.code), collectives_, p2p_, o.peer, o.tag};
  }

  // Records a completed operation (bytes sent by the ring-algorithm count);
  // on the communication thread, for wait() to record.
  void finish(const Op& o, std::int64_t bytes_sent) {
    const double seconds = std::chrono::duration<double>(Clock::now() - o.start).count();
    if (worker_.joinable() && std::this_thread::get_id() == worker_.get_id()) {
      std::lock_guard lock(mutex_);
      done_.push_back({o.code, bytes_sent, seconds});
    } else {
      record(op_name(o.code), bytes_sent, seconds);
    }
  }

  // Whether messages of `bytes` go directly to all other ranks (else round a ring).
  bool direct(std::int64_t bytes) const { return bytes * (size_ - 1) <= kDirectBytes; }
  int prev_of(int r) const { return (r + size_ - 1) % size_; }

  // Scratch memory of at least `bytes` (kept between operations).
  char* scratch(std::int64_t bytes) {
    if (!scratch_ || static_cast<std::int64_t>(scratch_->size()) < bytes)
      scratch_ = std::make_shared<std::vector<char>>(static_cast<std::size_t>(bytes));
    return scratch_->data();
  }

  // Adds a message to the operation in progress; its request, to be set.
  MPI_Request* add_message(const Message& m) {
    messages_.push_back(m);
    requests_.push_back(MPI_REQUEST_NULL);
    return &requests_.back();
  }
  void clear_messages() {
    messages_.clear();
    requests_.clear();
  }

  // One message of the operation in progress.
  void post(const Op& o, MPI_Comm comm, const void* p, int count, MPI_Datatype type, int peer, int tag, bool send,
            std::int64_t bytes) {
    MPI_Request* r = add_message({peer, send, bytes});
    call(o, send ? MPI_Isend(p, count, type, peer, tag, comm, r)
                 : MPI_Irecv(const_cast<void*>(p), count, type, peer, tag, comm, r));
  }
  // `bytes` of a collective, in messages of at most kSegmentBytes (none when 0).
  void post_segments(const Op& o, const char* p, std::int64_t bytes, int peer, bool send) {
    for (std::int64_t at = 0; at < bytes; at += kSegmentBytes) {
      const std::int64_t len = std::min(kSegmentBytes, bytes - at);
      post(o, coll_, p + at, static_cast<int>(len), MPI_BYTE, peer, o.coll_tag, send, len);
    }
  }
  void post_send(const char* p, std::int64_t bytes, int to, const Op& o) { post_segments(o, p, bytes, to, true); }
  void post_recv(char* p, std::int64_t bytes, int from, const Op& o) { post_segments(o, p, bytes, from, false); }

  // A message of `bytes` to and from every other rank q: from send(q), into
  // recv(q).
  template <typename Send, typename Recv>
  void exchange_with_all(Op& o, std::int64_t bytes, Send&& send, Recv&& recv) {
    for (int q = 0; q < size_; ++q) {
      if (q == rank_) continue;
      post_recv(recv(q), bytes, q, o);
      post_send(send(q), bytes, q, o);
    }
    wait(o);
  }

  // The direct reduction: contribution(q), `bytes` long, goes to rank q;
  // this rank's part from every rank (its own is contribution(rank)) is
  // reduced in rank order into `out`, which may be its own contribution.
  template <typename Contribution>
  void direct_reduce(Op& o, const Reduction& red, std::int64_t bytes, Contribution&& contribution, char* out) {
    char* all = scratch(bytes * size_);
    exchange_with_all(o, bytes, contribution, [&](int q) { return all + q * bytes; });
    if (bytes == 0) return;
    std::memcpy(all + rank_ * bytes, contribution(rank_), static_cast<std::size_t>(bytes));
    reduce_in_rank_order(o, red, all, bytes);
    std::memcpy(out, all, static_cast<std::size_t>(bytes));
  }

  // inout = in (op) inout, elementwise over `bytes`.
  void reduce(const Op& o, const Reduction& red, const char* in, char* inout, std::int64_t bytes) const {
    const std::int64_t max_bytes = static_cast<std::int64_t>(INT_MAX / red.esize * red.esize);
    for (std::int64_t at = 0; at < bytes; at += max_bytes) {
      const std::int64_t len = std::min(max_bytes, bytes - at);
      call(o, MPI_Reduce_local(in + at, inout + at, static_cast<int>(len / static_cast<std::int64_t>(red.esize)),
                               red.type, red.op));
    }
  }

  // all[0 .. n) = all[N-1] (op) (... (op) (all[1] (op) all[0])) for the N
  // contributions of `n` bytes at all + q * n: the same order on every rank.
  void reduce_in_rank_order(const Op& o, const Reduction& red, char* all, std::int64_t n) const {
    for (int q = 1; q < size_; ++q) reduce(o, red, all + q * n, all, n);
  }

  // Ring reduce-scatter of this rank's contribution `in` (parts of
  // `parts`, in elements of red.esize bytes). In step k = 0 .. N-2 the rank
  // sends part (r-k-1) mod N (its own contribution first, then the partial
  // reduction it made in the step before) to rank r+1 and reduces the part
  // (r-k-2) mod N coming from rank r-1 into `partial(part)`, which may be
  // that part of `in` itself (in place). Part r, complete, ends in
  // partial(r). The one received part waits in scratch memory.
  template <typename Partial>
  void ring_reduce_scatter(Op& o, const Reduction& red, const char* in, const Parts& parts, Partial&& partial) {
    const int next = (rank_ + 1) % size_, prev = prev_of(rank_);
    const std::size_t es = red.esize;
    const std::int64_t largest = parts.count(0) * static_cast<std::int64_t>(es);
    char* received = ring_buffer(largest);
    const char* outgoing = nullptr;
    for (int k = 0; k + 1 < size_; ++k) {
      const int send_part = ((rank_ - k - 1) % size_ + size_) % size_;
      const int recv_part = ((rank_ - k - 2) % size_ + size_) % size_;
      if (k == 0) outgoing = in + parts.offset(send_part) * es;
      const std::int64_t recv_bytes = parts.count(recv_part) * static_cast<std::int64_t>(es);
      post_send(outgoing, parts.count(send_part) * static_cast<std::int64_t>(es), next, o);
      post_recv(received, recv_bytes, prev, o);
      wait(o);
      char* target = partial(recv_part);
      const char* own = in + parts.offset(recv_part) * es;
      if (target != own) std::memcpy(target, own, static_cast<std::size_t>(recv_bytes));
      reduce(o, red, received, target, recv_bytes);
      outgoing = target;
    }
  }

  // Ring all-gather in place: this rank's part of `data` is there; in step
  // k it sends part (r-k) mod N to rank r+1 and receives part (r-k-1) mod N
  // from rank r-1.
  void ring_all_gather(Op& o, char* data, const Parts& parts, std::size_t es) {
    const int next = (rank_ + 1) % size_, prev = prev_of(rank_);
    for (int k = 0; k + 1 < size_; ++k) {
      const int send_part = ((rank_ - k) % size_ + size_) % size_;
      const int recv_part = ((rank_ - k - 1) % size_ + size_) % size_;
      post_send(data + parts.offset(send_part) * es, parts.count(send_part) * static_cast<std::int64_t>(es), next, o);
      post_recv(data + parts.offset(recv_part) * es, parts.count(recv_part) * static_cast<std::int64_t>(es), prev, o);
      wait(o);
    }
  }

  // The ring's receive buffer (kept between operations; apart from scratch(),
  // which holds reduce_scatter's partial sums meanwhile).
  char* ring_buffer(std::int64_t bytes) {
    if (!ring_ || static_cast<std::int64_t>(ring_->size()) < bytes)
      ring_ = std::make_shared<std::vector<char>>(static_cast<std::size_t>(bytes));
    return ring_->data();
  }

  // Waits for every pending message of `o`, calling on_done(i) as message
  // i completes (it may post more), under the operation's deadline.
  template <typename OnDone>
  void wait(Op& o, OnDone&& on_done) {
    std::int64_t coming = 0;  // bytes of the messages not yet complete
    std::size_t active = 0;
    for (const Message& m : messages_) {
      coming += m.bytes;
      ++active;
    }
    Clock::time_point spin_until{};  // {}: from the next reading of the clock
    auto nap = std::chrono::duration_cast<Clock::duration>(kFirstNap);
    unsigned tests = 0;
    while (active > 0) {
      indices_.resize(requests_.size());
      statuses_.resize(requests_.size());
      int completed = 0;
      const int rc = MPI_Testsome(static_cast<int>(requests_.size()), requests_.data(), &completed, indices_.data(),
                                  statuses_.data());
      if (rc != MPI_SUCCESS) message_failed(o, rc, completed);
      if (completed == MPI_UNDEFINED) break;
      if (completed > 0) {
        for (int j = 0; j < completed; ++j) {
          const auto i = static_cast<std::size_t>(indices_[static_cast<std::size_t>(j)]);
          coming -= messages_[i].bytes;
          --active;
          last_status_ = statuses_[static_cast<std::size_t>(j)];
          const std::size_t before = messages_.size();
          on_done(i);
          for (std::size_t added = before; added < messages_.size(); ++added) {
            coming += messages_[added].bytes;
            ++active;
          }
        }
        spin_until = {};
        nap = std::chrono::duration_cast<Clock::duration>(kFirstNap);
        continue;
      }
      if (++tests % kTestsPerClock != 0) continue;
      const auto now = Clock::now();
      if (spin_until == Clock::time_point{}) spin_until = now + spin_time(coming);
      if (now < spin_until) continue;
      if (now >= o.deadline) timed_out(o);
      serve_queries();
      std::this_thread::sleep_for(nap);
      nap = std::min(nap * 2, std::chrono::duration_cast<Clock::duration>(kMaxNap));
    }
    clear_messages();
  }
  void wait(Op& o) {
    wait(o, [](std::size_t) {});
  }

  static Clock::duration spin_time(std::int64_t bytes) {
    return kSpin + std::chrono::duration_cast<Clock::duration>(
                       std::chrono::duration<double>(static_cast<double>(bytes) / kSpinBytesPerSecond));
  }

  // An MPI error in a message of `o`. A send or receive on its own (a
  // truncated message, say) leaves the communicator usable; a collective
  // with messages still in flight does not.
  [[noreturn]] void message_failed(Op& o, int rc, int completed) {
    int code = rc;
    if (rc == MPI_ERR_IN_STATUS)
      for (int j = 0; j < completed; ++j)
        if (statuses_[static_cast<std::size_t>(j)].MPI_ERROR != MPI_SUCCESS) {
          code = statuses_[static_cast<std::size_t>(j)].MPI_ERROR;
          break;
        }
    const bool others_in_flight = requests_.size() > 1;
    clear_messages();
    if (others_in_flight) {
      keep_buffers(o);
      fail_job(describe_op(o) + ": MPI call failed: " + mpi_message(code) + ".");
    }
    call(o, code);
    throw Error(prefix() + op_name(o.code) + ": MPI call failed");  // not reached: code != MPI_SUCCESS
  }

  // A duplicate of MPI_COMM_WORLD with MPI_ERRORS_RETURN, made by every
  // rank within the timeout.
  MPI_Comm duplicate() {
    MPI_Comm dup = MPI_COMM_NULL;
    MPI_Request request = MPI_REQUEST_NULL;
    call("init", MPI_Comm_idup(MPI_COMM_WORLD, &dup, &request));
    const auto deadline = Clock::now() + timeout_;
    auto nap = std::chrono::duration_cast<Clock::duration>(kFirstNap);
    for (;;) {
      int done = 0;
      call("init", MPI_Test(&request, &done, MPI_STATUS_IGNORE));
      if (done) break;
      if (Clock::now() >= deadline)
        fail_job("init: timed out after " + seconds_text(timeout_s_) + " s (" + timeout_key_ +
                 ") waiting for the other ranks to make their communicators: every rank of the job must make an "
                 "'mpi' communicator; one did not start, failed earlier, or is busy elsewhere.");
      std::this_thread::sleep_for(nap);
      nap = std::min(nap * 2, std::chrono::duration_cast<Clock::duration>(kMaxNap));
    }
    call("init", MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN));
    return dup;
  }

  // Answers the ranks that asked where this one is (its current operation).
  // The control channel is best effort: its errors are ignored.
  void serve_queries() {
    for (;;) {
      int flag = 0;
      MPI_Message message = MPI_MESSAGE_NULL;
      MPI_Status status{};
      if (MPI_Improbe(MPI_ANY_SOURCE, kQueryTag, ctl_, &flag, &message, &status) != MPI_SUCCESS || !flag) break;
      Position asker;
      if (MPI_Mrecv(&asker, kPositionWords, MPI_INT64_T, &message, MPI_STATUS_IGNORE) != MPI_SUCCESS) break;
      Answer a{std::make_shared<Position>(position_), MPI_REQUEST_NULL};
      if (MPI_Isend(a.position.get(), kPositionWords, MPI_INT64_T, status.MPI_SOURCE, kAnswerTag, ctl_, &a.request) ==
          MPI_SUCCESS)
        answers_.push_back(std::move(a));
    }
    answers_.erase(std::remove_if(answers_.begin(), answers_.end(),
                                  [](Answer& a) {
                                    int done = 0;
                                    return MPI_Test(&a.request, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS || done;
                                  }),
                   answers_.end());
  }

  // Asks every other rank where it is; their answers (none from a rank that
  // did not answer within the grace period).
  std::vector<std::optional<Position>> ask_everyone() {
    std::vector<std::optional<Position>> where(static_cast<std::size_t>(size_));
    auto query = std::make_shared<Position>(position_);
    // Sends to ranks that went may never complete: MPI keeps the message.
    leftovers().memory.push_back(query);
    std::vector<MPI_Request> queries;
    for (int r = 0; r < size_; ++r) {
      MPI_Request q = MPI_REQUEST_NULL;
      if (r != rank_ && MPI_Isend(query.get(), kPositionWords, MPI_INT64_T, r, kQueryTag, ctl_, &q) == MPI_SUCCESS)
        queries.push_back(q);
    }
    int missing = size_ - 1;
    const auto until = Clock::now() + grace_;
    while (missing > 0 && Clock::now() < until) {
      serve_queries();  // the others may be asking too
      for (;;) {
        int flag = 0;
        MPI_Message message = MPI_MESSAGE_NULL;
        MPI_Status status{};
        if (MPI_Improbe(MPI_ANY_SOURCE, kAnswerTag, ctl_, &flag, &message, &status) != MPI_SUCCESS || !flag) break;
        Position p;
        if (MPI_Mrecv(&p, kPositionWords, MPI_INT64_T, &message, MPI_STATUS_IGNORE) != MPI_SUCCESS) break;
        auto& slot = where[static_cast<std::size_t>(status.MPI_SOURCE)];
        if (!slot) --missing;
        slot = p;
      }
      if (missing > 0) std::this_thread::sleep_for(kMaxNap);
    }
    for (auto& q : queries) MPI_Request_free(&q);
    return where;
  }

  // "Did not arrive: rank 1 not responding (...); rank 3 behind, in recv #1
  // from rank 1 (tag 7), after collective #2. In all_reduce #3 like this
  // rank: rank 2."
  std::string report(const Op& o, const std::vector<std::optional<Position>>& where) const {
    std::vector<std::string> absent, alongside, elsewhere;
    for (int r = 0; r < size_; ++r) {
      if (r == rank_) continue;
      const std::string who = "rank " + std::to_string(r);
      const auto& p = where[static_cast<std::size_t>(r)];
      if (!p) {
        absent.push_back(who + " not responding (dead, stopped, or busy outside the communicator)");
      } else if (is_collective(o.code)) {
        if (p->op == static_cast<std::int64_t>(o.code) && p->collectives == o.seq)
          alongside.push_back(std::to_string(r));
        else
          absent.push_back(who + " " + relation(*p, o.seq) + ", in " + describe(*p));
      } else if (r == o.peer) {
        absent.push_back(who + " (the peer) in " + describe(*p));
      } else {
        elsewhere.push_back(who + " in " + describe(*p));
      }
    }
    std::string s = absent.empty() ? "Every rank is in this operation, yet MPI did not complete it (a network or MPI "
                                     "problem, or more data than the timeout allows)."
                                   : "Did not arrive: " + join(absent, "; ") + ".";
    if (!alongside.empty())
      s += std::string(" In ") + op_name(o.code) + " #" + std::to_string(o.seq) + " like this rank: rank" +
           (alongside.size() > 1 ? "s " : " ") + join(alongside, ", ") + ".";
    if (!elsewhere.empty()) s += " Elsewhere: " + join(elsewhere, "; ") + ".";
    return s;
  }

  // "all_reduce #5 (4096 bytes)", "recv #2 from rank 1 (tag 7, 64 bytes)".
  std::string describe_op(const Op& o) const {
    std::string s = std::string(op_name(o.code)) + " #" + std::to_string(o.seq);
    if (is_collective(o.code)) return s + " (" + std::to_string(o.bytes) + " bytes)";
    return s + (o.code == OpCode::send ? " to" : " from") + " rank " + std::to_string(o.peer) + " (tag " +
           std::to_string(o.tag) + ", " + std::to_string(o.bytes) + " bytes)";
  }

  // The ranks whose messages `o` still waits for: " (waiting for rank 3)".
  std::string waiting_for() const {
    std::vector<int> ranks;
    for (std::size_t i = 0; i < messages_.size(); ++i) {
      const int peer = messages_[i].peer;
      if (requests_[i] != MPI_REQUEST_NULL && peer >= 0 && std::find(ranks.begin(), ranks.end(), peer) == ranks.end())
        ranks.push_back(peer);
    }
    if (ranks.empty()) return "";
    std::sort(ranks.begin(), ranks.end());
    std::vector<std::string> names;
    for (int r : ranks) names.push_back(std::to_string(r));
    return std::string(" (its messages to or from rank") + (ranks.size() > 1 ? "s " : " ") + join(names, ", ") +
           " did not complete)";
  }

  // MPI may still use the operation's buffers and scratch memory: keep them.
  void keep_buffers(const Op& o) {
    for (const Tensor* t : o.buffers)
      if (t != nullptr && t->defined()) leftovers().tensors.push_back(*t);
    if (scratch_) leftovers().memory.push_back(scratch_);
    if (ring_) leftovers().memory.push_back(ring_);
  }

  [[noreturn]] void timed_out(const Op& o) {
    keep_buffers(o);
    const std::string what = describe_op(o) + " timed out after " + seconds_text(timeout_s_) + " s (" + timeout_key_ +
                             ")" + waiting_for() + ". ";
    clear_messages();
    fail_job(what + report(o, ask_everyone()));
  }

  // Marks this communicator (and the job) failed and throws.
  [[noreturn]] void fail_job(const std::string& problem) {
    failed_ = problem;
    g_job_failed = true;
    register_exit_handler();
    throw Error(prefix() + problem +
                " The communicator has failed: this process will end the job (MPI_Abort) when it exits.");
  }

  [[noreturn]] void fail(const char* op, const std::string& problem) const {
    throw Error(prefix() + op + ": " + problem);
  }
  [[noreturn]] void fail(const Op& o, const std::string& problem) const { fail(op_name(o.code), problem); }

  void call(const char* op, int rc, int peer = -1, int tag = -1) const {
    if (rc == MPI_SUCCESS) return;
    std::string where;
    if (peer >= 0) where = " (peer " + std::to_string(peer) + ", tag " + std::to_string(tag) + ")";
    fail(op, std::string("MPI call failed") + where + ": " + mpi_message(rc));
  }
  void call(const Op& o, int rc) const { call(op_name(o.code), rc, o.peer, o.tag); }

  void check_host(const Op& o, const char* what, const Tensor& t) const {
    if (t.numel() > 0 && !t.defined()) fail(o, std::string("'") + what + "' is undefined");
    if (!t.device().is_cpu())
      fail(o, std::string("'") + what + "' is " + t.str() +
                  ": the mpi communicator works on host tensors only (copy to the host first)");
  }

  void check_same_dtype(const Op& o, const Tensor& in, const Tensor& out) const {
    if (in.dtype() != out.dtype()) fail(o, "'in' is " + in.str() + " but 'out' is " + out.str() + ": dtypes differ");
  }

  void check_count(const Op& o, std::int64_t n) const {
    if (n > INT_MAX)
      fail(o, std::to_string(n) + " elements is more than one MPI message takes (" + std::to_string(INT_MAX) + ")");
  }

  void check_rank(const Op& o, const char* what, int r) const {
    if (r < 0 || r >= size_)
      fail(o, std::string(what) + " " + std::to_string(r) + " is not a rank of this job (ranks 0 to " +
                  std::to_string(size_ - 1) + ", size " + std::to_string(size_) + ")");
  }

  void check_peer(const Op& o) const {
    check_rank(o, "peer", o.peer);
    if (o.peer == rank_)
      fail(o,
           "peer " + std::to_string(o.peer) + " is this rank: a blocking " + op_name(o.code) + " to itself would hang");
    if (o.tag < 0 || o.tag > tag_ub_)
      fail(o, "tag " + std::to_string(o.tag) + " is outside MPI's range [0, " + std::to_string(tag_ub_) + "]");
  }

  static bool overlaps(const Tensor& a, const Tensor& b) {
    if (a.bytes() == 0 || b.bytes() == 0) return false;
    const char* a0 = static_cast<const char*>(a.data());
    const char* b0 = static_cast<const char*>(b.data());
    return a0 < b0 + b.bytes() && b0 < a0 + a.bytes();
  }

  Reduction reduction(const Op& o, const Tensor& t, ReduceOp reduce) const {
    Reduction red{MPI_DATATYPE_NULL, MPI_OP_NULL, dtype_size(t.dtype())};
    switch (t.dtype()) {
      case DType::f32:
        red.type = MPI_FLOAT;
        break;
      case DType::f64:
        red.type = MPI_DOUBLE;
        break;
      case DType::i32:
        red.type = MPI_INT32_T;
        break;
      case DType::i64:
        red.type = MPI_INT64_T;
        break;
      default:
        fail(o, t.str() + ": reductions take f32, f64, i32 or i64 (convert bf16/f16 to f32 first)");
    }
    switch (reduce) {
      case ReduceOp::sum:
      case ReduceOp::avg:
        red.op = MPI_SUM;
        break;
      case ReduceOp::max:
        red.op = MPI_MAX;
        break;
      case ReduceOp::min:
        red.op = MPI_MIN;
        break;
      default:
        fail(o, "unknown reduce operation " + std::to_string(static_cast<int>(reduce)));
    }
    return red;
  }

  MPI_Datatype move_type(const Op& o, const Tensor& t) const {
    switch (t.dtype()) {
      case DType::f32:
        return MPI_FLOAT;
      case DType::f64:
        return MPI_DOUBLE;
      case DType::i32:
        return MPI_INT32_T;
      case DType::i64:
        return MPI_INT64_T;
      case DType::bf16:
      case DType::f16:
      case DType::u16:
        return MPI_UINT16_T;
    }
    fail(o, t.str() + ": unsupported dtype");
  }

  // The sum divided by size(), for ReduceOp::avg.
  void divide(Tensor& t) const {
    const std::int64_t n = t.numel();
    switch (t.dtype()) {
      case DType::f32: {
        float* p = t.ptr<float>();
        const float s = static_cast<float>(size_);
        for (std::int64_t i = 0; i < n; ++i) p[i] /= s;
        break;
      }
      case DType::f64: {
        double* p = t.ptr<double>();
        for (std::int64_t i = 0; i < n; ++i) p[i] /= size_;
        break;
      }
      case DType::i32: {
        std::int32_t* p = t.ptr<std::int32_t>();
        for (std::int64_t i = 0; i < n; ++i) p[i] /= size_;
        break;
      }
      case DType::i64: {
        std::int64_t* p = t.ptr<std::int64_t>();
        for (std::int64_t i = 0; i < n; ++i) p[i] /= size_;
        break;
      }
      default:
        break;
    }
  }

  const double timeout_s_;
  const Clock::duration timeout_, grace_;
  const std::string timeout_key_;  // where timeout_s was set, for messages
  MPI_Comm comm_ = MPI_COMM_NULL;  // send and recv
  MPI_Comm coll_ = MPI_COMM_NULL;  // the messages of the collectives
  MPI_Comm ctl_ = MPI_COMM_NULL;   // the control channel ("where are you?")
  int rank_ = 0;
  int size_ = 1;
  int local_rank_ = 0;
  int tag_ub_ = 32767;
  std::int64_t collectives_ = 0;  // collectives started
  std::int64_t p2p_ = 0;          // sends and receives started
  Position position_;             // the current (or last) operation, for answers
  std::vector<Answer> answers_;   // in flight
  std::string failed_;            // why this communicator failed; empty while it works
  // The messages of the operation in progress, their requests, and wait()'s
  // arrays for MPI_Testsome.
  std::vector<Message> messages_;
  std::vector<MPI_Request> requests_;
  std::vector<int> indices_;
  std::vector<MPI_Status> statuses_;
  MPI_Status last_status_{};
  // Scratch memory: the direct algorithms' contributions, reduce_scatter's
  // partial sums (scratch_); the ring's received part (ring_).
  std::shared_ptr<std::vector<char>> scratch_, ring_;

  // The communication thread (see Overlap) and what it shares, under mutex_.
  struct Job {
    CommTicket ticket = 0;
    std::function<void()> work;
  };
  struct Done {
    OpCode code;
    std::int64_t bytes;
    double seconds;
  };
  bool can_overlap_ = false;  // MPI allows calls from the thread
  std::thread worker_;
  std::mutex mutex_;
  std::condition_variable work_cv_, done_cv_;
  std::deque<Job> queue_;
  CommTicket issued_ = 0, completed_ = 0;
  std::vector<Done> done_;  // completed on the thread, not yet in stats()
  std::deque<std::pair<CommTicket, std::exception_ptr>> errors_;
  bool stopping_ = false;
};

// timeout_s: seconds > 0 (default 300).
double read_timeout(const Options& options) {
  const double t = options.get_double("timeout_s", kDefaultTimeoutSeconds, -1e300, 1e300);
  if (!(t > 0) || t > 1e9)
    throw Error(options.where("timeout_s") + ": " + seconds_text(t) +
                " is not a timeout: give the seconds (> 0, e.g. 300) a rank waits for the others in one "
                "operation before it gives up and ends the job");
  return t;
}

Communicator* make_mpi_comm(const Options& options) {
  const double timeout_s = read_timeout(options);
  options.reject_unknown();
  const std::string key = (options.table().empty() ? "" : options.table() + ".") + "timeout_s";
  return new MpiCommunicator(timeout_s, options.has("timeout_s") ? options.where("timeout_s") : key + ", the default");
}

}  // namespace
}  // namespace neox

NEOX_PLUGIN(comm, "mpi", "1.0", "MPI communicator (Open MPI; host buffers; start with mpirun)", &neox::make_mpi_comm)
