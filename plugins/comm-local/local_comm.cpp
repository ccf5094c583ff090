// SPDX-License-Identifier: Apache-2.0
// comm plugin `local`: the communicator of a one-process job.
//
// Rank 0 of a job of size 1 (local rank 0). Collectives over one rank are
// identities or copies; there are no peers, so send and recv throw. Buffers
// are host tensors. No options.
#include <cstring>
#include <string>

#include "neox/communicator.h"
#include "neox/error.h"
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
    check_op("all_reduce", op);
    check_host("all_reduce", "buffer", buffer);
    // Sum, average, max or min over a single rank leave the buffer as it is.
  }

  void reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op) override {
    check_op("reduce_scatter", op);
    check_host("reduce_scatter", "in", in);
    check_host("reduce_scatter", "out", out);
    check_same_dtype("reduce_scatter", in, out);
    if (in.numel() != static_cast<std::int64_t>(size()) * out.numel())
      fail("reduce_scatter", "'in' must have size() * out.numel() = " +
                                 std::to_string(size() * out.numel()) + " elements, got " +
                                 in.str() + " for out " + out.str());
    copy(out, in);
  }

  void all_gather(const Tensor& in, Tensor& out) override {
    check_host("all_gather", "in", in);
    check_host("all_gather", "out", out);
    check_same_dtype("all_gather", in, out);
    if (out.numel() != static_cast<std::int64_t>(size()) * in.numel())
      fail("all_gather", "'out' must have size() * in.numel() = " +
                             std::to_string(size() * in.numel()) + " elements, got " + out.str() +
                             " for in " + in.str());
    copy(out, in);
  }

  void broadcast(Tensor& buffer, int root) override {
    if (root != 0)
      fail("broadcast", "root " + std::to_string(root) +
                            " is not a rank of this job (ranks 0 to 0, size 1)");
    check_host("broadcast", "buffer", buffer);
  }

  void send(const Tensor& /*buffer*/, int peer, int tag) override {
    fail("send", "cannot send to rank " + std::to_string(peer) + " (tag " + std::to_string(tag) +
                     "): a one-process job has no peers (use a multi-process comm plugin)");
  }

  void recv(Tensor& /*buffer*/, int peer, int tag) override {
    fail("recv", "cannot receive from rank " + std::to_string(peer) + " (tag " +
                     std::to_string(tag) +
                     "): a one-process job has no peers (use a multi-process comm plugin)");
  }

  void barrier() override {}

 private:
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
      fail(op, std::string("'") + what + "' is " + t.str() +
                   ": the local communicator works on host tensors only");
  }

  static void check_same_dtype(const char* op, const Tensor& in, const Tensor& out) {
    if (in.dtype() != out.dtype())
      fail(op, "'in' is " + in.str() + " but 'out' is " + out.str() + ": dtypes differ");
  }

  // One rank's part is the whole input: copy unless in and out are the same memory.
  static void copy(Tensor& out, const Tensor& in) {
    if (out.bytes() == 0 || out.data() == in.data()) return;
    std::memmove(out.data(), in.data(), out.bytes());
  }
};

Communicator* make_local_comm(const Options& options) {
  options.reject_unknown();
  return new LocalCommunicator();
}

}  // namespace
}  // namespace neox

NEOX_PLUGIN(comm, "local", "1.0", "one-process communicator (rank 0 of 1, no peers)",
            &neox::make_local_comm)
