// SPDX-License-Identifier: Apache-2.0
// comm plugin `local`: the communicator of a one-process job.
//
// Rank 0 of a job of size 1 (local rank 0). Collectives over one rank are
// identities or copies; there are no peers, so send and recv throw. Buffers
// are host tensors. Every completed call is counted (stats()) with 0 bytes
// sent, as the ring formulas of neox/communicator.h give for one rank, and
// its wall time. No options.
#include <chrono>
#include <cstring>
#include <string>

#include "neox/communicator.h"
#include "neox/error.h"
#include "neox/launch.h"
#include "neox/options.h"
#include "neox/plugin.h"

namespace neox {
namespace {

class LocalCommunicator final : public Communicator {
 public:
  std::string name() const override { return "local"; }
  int rank() const override { return 0; }
  int size() const override { return 1; }
  int local_rank() const override { return 0; }

  void all_reduce(Tensor& buffer, ReduceOp op) override {
    const Timer timer;
    check_op("all_reduce", op);
    check_host("all_reduce", "buffer", buffer);
    // Sum, average, max or min over a single rank leave the buffer as it is.
    done("all_reduce", timer);
  }

  void reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op) override {
    const Timer timer;
    check_op("reduce_scatter", op);
    check_host("reduce_scatter", "in", in);
    check_host("reduce_scatter", "out", out);
    check_same_dtype("reduce_scatter", in, out);
    if (in.numel() != static_cast<std::int64_t>(size()) * out.numel())
      fail("reduce_scatter", "'in' must have size() * out.numel() = " + std::to_string(size() * out.numel()) +
                                 " elements, got " + in.str() + " for out " + out.str());
    copy(out, in);
    done("reduce_scatter", timer);
  }

  void all_gather(const Tensor& in, Tensor& out) override {
    const Timer timer;
    check_host("all_gather", "in", in);
    check_host("all_gather", "out", out);
    check_same_dtype("all_gather", in, out);
    if (out.numel() != static_cast<std::int64_t>(size()) * in.numel())
      fail("all_gather", "'out' must have size() * in.numel() = " + std::to_string(size() * in.numel()) +
                             " elements, got " + out.str() + " for in " + in.str());
    copy(out, in);
    done("all_gather", timer);
  }

  void broadcast(Tensor& buffer, int root) override {
    const Timer timer;
    if (root != 0)
      fail("broadcast", "root " + std::to_string(root) + " is not a rank of this job (ranks 0 to 0, size 1)");
    check_host("broadcast", "buffer", buffer);
    done("broadcast", timer);
  }

  void send(const Tensor& /*buffer*/, int peer, int tag) override {
    fail("send", "cannot send to rank " + std::to_string(peer) + " (tag " + std::to_string(tag) +
                     "): a one-process job has no peers (use a multi-process comm plugin)");
  }

  void recv(Tensor& /*buffer*/, int peer, int tag) override {
    fail("recv", "cannot receive from rank " + std::to_string(peer) + " (tag " + std::to_string(tag) +
                     "): a one-process job has no peers (use a multi-process comm plugin)");
  }

  void barrier() override { done("barrier", Timer()); }

 private:
  struct Timer {
    std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  };
  // Counts a completed call: one rank sends nothing.
  void done(const char* op, const Timer& timer) {
    record(op, 0, std::chrono::duration<double>(std::chrono::steady_clock::now() - timer.start).count());
  }

  [[noreturn]] static void fail(const char* op, const std::string& problem) {
    throw Error(std::string("comm 'local' (rank 0 of 1): ") + op + ": " + problem);
  }

  static void check_op(const char* op, ReduceOp reduce) {
    switch (reduce) {
      case ReduceOp::sum:
      case ReduceOp::avg:
      case ReduceOp::max:
      case ReduceOp::min:
        return;
    }
    fail(op, "unknown reduce operation " + std::to_string(static_cast<int>(reduce)));
  }

  static void check_host(const char* op, const char* what, const Tensor& t) {
    if (t.numel() > 0 && !t.defined()) fail(op, std::string("'") + what + "' is undefined");
    if (!t.device().is_cpu())
      fail(op, std::string("'") + what + "' is " + t.str() + ": the local communicator works on host tensors only");
  }

  static void check_same_dtype(const char* op, const Tensor& in, const Tensor& out) {
    if (in.dtype() != out.dtype()) fail(op, "'in' is " + in.str() + " but 'out' is " + out.str() + ": dtypes differ");
  }

  // One rank's part is the whole input: copy unless in and out are the same memory.
  static void copy(Tensor& out, const Tensor& in) {
    if (out.bytes() == 0 || out.data() == in.data()) return;
    std::memmove(out.data(), in.data(), out.bytes());
  }
};

Communicator* make_local_comm(const Options& options) {
  options.reject_unknown();
  // Started as one of several ranks (mpirun, srun, torchrun): running alone
  // would train N separate copies of the model.
  if (const LaunchInfo launch = detect_launch(); launch.world_size > 1)
    throw Error("comm 'local': this process is " + launch.str() +
                ", but the local communicator runs one process alone: set plugins.comm to \"mpi\" or \"nccl\"");
  return new LocalCommunicator();
}

}  // namespace
}  // namespace neox

NEOX_PLUGIN(comm, "local", "1.0", "one-process communicator (rank 0 of 1, no peers)", &neox::make_local_comm)
