// SPDX-License-Identifier: Apache-2.0
// Communicator: collectives among the ranks of one job.
//
// Made by a `comm` plugin. Collective calls must be made by every rank in
// the same order with equal-sized buffers. The plain calls are blocking;
// all_reduce, reduce_scatter and all_gather also come as *_start calls that
// return a ticket at once, for overlapping communication with computation
// (see "Overlap" below). Buffers
// live on the device the plugin documents (host for `local` and `mpi`, GPU
// for `nccl`). Failures (a dead peer, a timeout) throw neox::Error naming
// the rank and the operation; a communicator that has failed stays failed.
// Plugins that can hang on a dead or stopped peer take a `timeout_s` option
// (default 300 seconds) after which the waiting ranks give up.
//
// Each communicator counts what it sends (stats()), by operation, in the
// bytes one rank sends under the bandwidth-optimal ring algorithms (the "bus
// bytes" of nccl-tests), whatever algorithm the library really picks, so
// that figures from any engine compare with theory: for N ranks and an
// n-byte buffer, all_reduce 2(N-1)/N n; reduce_scatter (n bytes in) and
// all_gather (n bytes out) (N-1)/N n; broadcast n on every rank but the
// last of the chain (counted as n on every rank except the root's
// predecessor, i.e. rank (root-1) mod N); send n; recv and barrier 0.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "neox/export.h"
#include "neox/tensor.h"

namespace neox {

enum class ReduceOp { sum, avg, max, min };

// A started collective (the *_start calls); 0 means already complete.
using CommTicket = std::uint64_t;

struct CommOpStats {
  std::int64_t calls = 0;
  std::int64_t bytes = 0;  // sent by this rank (ring-algorithm count, see above)
  double seconds = 0.0;    // wall time inside the calls
};

// By operation name: "all_reduce", "reduce_scatter", "all_gather",
// "broadcast", "send", "recv", "barrier".
struct CommStats {
  std::map<std::string, CommOpStats> ops;
  std::int64_t total_bytes() const {
    std::int64_t n = 0;
    for (const auto& [name, op] : ops) n += op.bytes;
    return n;
  }
};

// The ring-algorithm bytes one of `ranks` ranks sends (see above).
inline std::int64_t ring_all_reduce_bytes(std::int64_t buffer_bytes, int ranks) {
  return ranks > 1 ? 2 * (ranks - 1) * buffer_bytes / ranks : 0;
}
inline std::int64_t ring_gather_bytes(std::int64_t total_bytes, int ranks) {
  return ranks > 1 ? (ranks - 1) * total_bytes / ranks : 0;
}

class NEOX_API Communicator {
 public:
  virtual ~Communicator() = default;
  virtual std::string name() const = 0;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // The rank's index among the ranks on its node (picks the GPU).
  virtual int local_rank() const = 0;

  // In place over all ranks.
  virtual void all_reduce(Tensor& buffer, ReduceOp op) = 0;
  // `in` has size() * out.numel() elements; rank r receives reduced part r.
  virtual void reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op) = 0;
  // `out` has size() * in.numel() elements, part r from rank r.
  virtual void all_gather(const Tensor& in, Tensor& out) = 0;
  virtual void broadcast(Tensor& buffer, int root) = 0;
  virtual void send(const Tensor& buffer, int peer, int tag) = 0;
  virtual void recv(Tensor& buffer, int peer, int tag) = 0;
  virtual void barrier() = 0;

  // ---- Overlap
  //
  // *_start begins the collective and returns a ticket; wait(ticket)
  // returns once it and every operation started before it have completed.
  // Operations run in the order they were started or called, blocking ones
  // included, so every rank must start them in the same order as for the
  // blocking calls. Until wait() returns for it, an operation's input must
  // not be written and its output neither read nor written, and both must
  // stay alive. An error of a started operation is thrown by wait() (or by
  // the next call). Only completed operations appear in stats().
  //
  // The defaults run the blocking call and return 0, so every communicator
  // takes these calls; overlaps() says whether it really works in the
  // background (`mpi`: on its own thread; `nccl`: on its own stream, after
  // the work already queued on set_stream()'s stream).
  virtual CommTicket all_reduce_start(Tensor& buffer, ReduceOp op);
  virtual CommTicket reduce_scatter_start(const Tensor& in, Tensor& out, ReduceOp op);
  virtual CommTicket all_gather_start(const Tensor& in, Tensor& out);
  // Waits for `ticket` (0: returns at once).
  virtual void wait(CommTicket ticket);
  virtual bool overlaps() const { return false; }
  // The stream on which the caller's device work runs (the backend's
  // native_stream(): a cudaStream_t for CUDA, null on the CPU). A device
  // communicator orders its operations after the work queued on it, and
  // work queued after a call (or after wait()) sees the results.
  virtual void set_stream(void* native_stream) { (void)native_stream; }

  // What this communicator has sent since it was made or reset_stats().
  const CommStats& stats() const { return stats_; }
  void reset_stats() { stats_ = CommStats{}; }

 protected:
  // Plugins call this once per completed operation.
  void record(const char* op, std::int64_t bytes_sent, double seconds) {
    CommOpStats& s = stats_.ops[op];
    ++s.calls;
    s.bytes += bytes_sent;
    s.seconds += seconds;
  }

 private:
  CommStats stats_;
};

}  // namespace neox
