// SPDX-License-Identifier: Apache-2.0
// comm plugin `mpi`: collectives over MPI among the processes of one job.
//
// Start the job with mpirun (`mpirun -np 4 neox train --config X`). The first
// communicator made in a process initialises MPI (MPI_Init_thread, funneled:
// only the thread that made it calls MPI) unless the program already did;
// MPI is then finalised once, at process exit, and only if this plugin
// initialised it. Each communicator works on its own duplicate of
// MPI_COMM_WORLD with MPI_ERRORS_RETURN, so every failing MPI call becomes a
// neox::Error naming the rank, the operation and MPI's message.
//
// Buffers are host tensors. Reductions (all_reduce, reduce_scatter) take
// f32, f64, i32 and i64; `avg` is a sum divided by size() (integer division
// for integers). Data movement (all_gather, broadcast, send, recv) also takes
// bf16, f16 and u16, moved as 16-bit words. No options.
#include <dlfcn.h>
#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "neox/communicator.h"
#include "neox/error.h"
#include "neox/options.h"
#include "neox/plugin.h"

namespace neox {
namespace {

// Elements per MPI call where a buffer is split into several calls (MPI
// counts are ints).
constexpr std::int64_t kMaxCount = std::int64_t{1} << 30;

std::string mpi_message(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) return "MPI error code " + std::to_string(code);
  return std::string(text, static_cast<std::size_t>(len));
}

void finalize_mpi() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

// Keeps a loaded library (found through one of its symbols) in memory until
// the process ends, and optionally makes its symbols global.
void pin_library(const void* symbol, int extra_flags) {
  Dl_info info{};
  if (dladdr(symbol, &info) == 0 || info.dli_fname == nullptr) return;
  // RTLD_NOLOAD: only takes another reference to the already loaded library.
  dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE | extra_flags);
}

// Initialises MPI once per process unless the program did; registers
// MPI_Finalize for process exit when we initialised it.
void ensure_mpi_initialised() {
  int initialised = 0;
  MPI_Initialized(&initialised);
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized)
    throw Error("comm 'mpi': MPI was already finalised in this process: it cannot be initialised again");
  if (initialised) return;
  // This plugin is loaded with dlopen and may be unloaded when its last
  // object goes: pin it and libmpi (with its symbols global, which Open MPI's
  // own dlopen'ed components expect) so that MPI and the exit handler below
  // outlive the registry.
  pin_library(reinterpret_cast<const void*>(&MPI_Init_thread), RTLD_GLOBAL);
  pin_library(reinterpret_cast<const void*>(&finalize_mpi), 0);
  int provided = 0;
  const int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
  if (rc != MPI_SUCCESS) throw Error("comm 'mpi': MPI_Init_thread failed: " + mpi_message(rc));
  std::atexit(finalize_mpi);
}

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator() {
    ensure_mpi_initialised();
    call("init", MPI_Comm_dup(MPI_COMM_WORLD, &comm_));
    // From here on errors on comm_ return codes instead of aborting the job.
    call("init", MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
    call("init", MPI_Comm_rank(comm_, &rank_));
    call("init", MPI_Comm_size(comm_, &size_));
    MPI_Comm node = MPI_COMM_NULL;
    call("init", MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node));
    call("init", MPI_Comm_rank(node, &local_rank_));
    MPI_Comm_free(&node);
    int flag = 0;
    int* ub = nullptr;
    call("init", MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &ub, &flag));
    tag_ub_ = flag && ub ? *ub : 32767;  // the standard's guaranteed minimum
  }

  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
  }

  std::string name() const override { return "mpi"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }

  void all_reduce(Tensor& buffer, ReduceOp op) override {
    const char* what = "all_reduce";
    check_host(what, "buffer", buffer);
    const MPI_Datatype type = reduce_type(what, buffer);
    const MPI_Op mop = mpi_op(what, op);
    char* p = static_cast<char*>(buffer.data());
    const std::size_t esize = dtype_size(buffer.dtype());
    for (std::int64_t at = 0; at < buffer.numel(); at += kMaxCount) {
      const std::int64_t n = std::min(kMaxCount, buffer.numel() - at);
      call(what, MPI_Allreduce(MPI_IN_PLACE, p + static_cast<std::size_t>(at) * esize, static_cast<int>(n), type,
                               mop, comm_));
    }
    if (op == ReduceOp::avg) divide(buffer);
  }

  void reduce_scatter(const Tensor& in, Tensor& out, ReduceOp op) override {
    const char* what = "reduce_scatter";
    check_host(what, "in", in);
    check_host(what, "out", out);
    check_same_dtype(what, in, out);
    if (in.numel() != static_cast<std::int64_t>(size_) * out.numel())
      fail(what, "'in' must have size() * out.numel() = " + std::to_string(size_ * out.numel()) +
                     " elements, got " + in.str() + " for out " + out.str());
    const MPI_Datatype type = reduce_type(what, in);
    const MPI_Op mop = mpi_op(what, op);
    check_count(what, out.numel());
    if (overlaps(in, out)) fail(what, "'in' and 'out' overlap: they must be separate buffers");
    call(what, MPI_Reduce_scatter_block(in.data(), out.data(), static_cast<int>(out.numel()), type, mop, comm_));
    if (op == ReduceOp::avg) divide(out);
  }

  void all_gather(const Tensor& in, Tensor& out) override {
    const char* what = "all_gather";
    check_host(what, "in", in);
    check_host(what, "out", out);
    check_same_dtype(what, in, out);
    if (out.numel() != static_cast<std::int64_t>(size_) * in.numel())
      fail(what, "'out' must have size() * in.numel() = " + std::to_string(size_ * in.numel()) +
                     " elements, got " + out.str() + " for in " + in.str());
    const MPI_Datatype type = move_type(what, in);
    check_count(what, in.numel());
    // `in` may already be this rank's part of `out` (in place) or separate.
    const char* mine = static_cast<const char*>(out.data()) + static_cast<std::size_t>(rank_) * in.bytes();
    if (in.data() == mine) {
      call(what, MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, out.data(), static_cast<int>(in.numel()), type,
                               comm_));
      return;
    }
    if (overlaps(in, out)) fail(what, "'in' overlaps 'out' but is not this rank's part of it");
    call(what, MPI_Allgather(in.data(), static_cast<int>(in.numel()), type, out.data(), static_cast<int>(in.numel()),
                             type, comm_));
  }

  void broadcast(Tensor& buffer, int root) override {
    const char* what = "broadcast";
    check_rank(what, "root", root);
    check_host(what, "buffer", buffer);
    const MPI_Datatype type = move_type(what, buffer);
    char* p = static_cast<char*>(buffer.data());
    const std::size_t esize = dtype_size(buffer.dtype());
    for (std::int64_t at = 0; at < buffer.numel(); at += kMaxCount) {
      const std::int64_t n = std::min(kMaxCount, buffer.numel() - at);
      call(what, MPI_Bcast(p + static_cast<std::size_t>(at) * esize, static_cast<int>(n), type, root, comm_));
    }
  }

  void send(const Tensor& buffer, int peer, int tag) override {
    const char* what = "send";
    check_peer(what, peer, tag);
    check_host(what, "buffer", buffer);
    const MPI_Datatype type = move_type(what, buffer);
    check_count(what, buffer.numel());
    call(what, MPI_Send(buffer.data(), static_cast<int>(buffer.numel()), type, peer, tag, comm_), peer, tag);
  }

  void recv(Tensor& buffer, int peer, int tag) override {
    const char* what = "recv";
    check_peer(what, peer, tag);
    check_host(what, "buffer", buffer);
    const MPI_Datatype type = move_type(what, buffer);
    check_count(what, buffer.numel());
    MPI_Status status{};
    call(what, MPI_Recv(buffer.data(), static_cast<int>(buffer.numel()), type, peer, tag, comm_, &status), peer, tag);
    int got = 0;
    call(what, MPI_Get_count(&status, type, &got), peer, tag);
    if (got != buffer.numel())
      fail(what, "from rank " + std::to_string(peer) + " (tag " + std::to_string(tag) + "): received " +
                     std::to_string(got) + " elements into " + buffer.str() + ": sizes differ");
  }

  void barrier() override { call("barrier", MPI_Barrier(comm_)); }

 private:
  std::string prefix() const {
    return "comm 'mpi' (rank " + std::to_string(rank_) + " of " + std::to_string(size_) + "): ";
  }

  [[noreturn]] void fail(const char* op, const std::string& problem) const {
    throw Error(prefix() + op + ": " + problem);
  }

  void call(const char* op, int rc, int peer = -1, int tag = -1) const {
    if (rc == MPI_SUCCESS) return;
    std::string where;
    if (peer >= 0) where = " (peer " + std::to_string(peer) + ", tag " + std::to_string(tag) + ")";
    fail(op, std::string("MPI call failed") + where + ": " + mpi_message(rc));
  }

  void check_host(const char* op, const char* what, const Tensor& t) const {
    if (t.numel() > 0 && !t.defined()) fail(op, std::string("'") + what + "' is undefined");
    if (!t.device().is_cpu())
      fail(op, std::string("'") + what + "' is " + t.str() +
                   ": the mpi communicator works on host tensors only (copy to the host first)");
  }

  void check_same_dtype(const char* op, const Tensor& in, const Tensor& out) const {
    if (in.dtype() != out.dtype())
      fail(op, "'in' is " + in.str() + " but 'out' is " + out.str() + ": dtypes differ");
  }

  void check_count(const char* op, std::int64_t n) const {
    if (n > INT_MAX)
      fail(op, std::to_string(n) + " elements per rank is more than one MPI call takes (" + std::to_string(INT_MAX) +
                   ")");
  }

  void check_rank(const char* op, const char* what, int r) const {
    if (r < 0 || r >= size_)
      fail(op, std::string(what) + " " + std::to_string(r) + " is not a rank of this job (ranks 0 to " +
                   std::to_string(size_ - 1) + ", size " + std::to_string(size_) + ")");
  }

  void check_peer(const char* op, int peer, int tag) const {
    check_rank(op, "peer", peer);
    if (peer == rank_) fail(op, "peer " + std::to_string(peer) + " is this rank: a blocking " + op + " to itself would hang");
    if (tag < 0 || tag > tag_ub_)
      fail(op, "tag " + std::to_string(tag) + " is outside MPI's range [0, " + std::to_string(tag_ub_) + "]");
  }

  static bool overlaps(const Tensor& a, const Tensor& b) {
    if (a.bytes() == 0 || b.bytes() == 0) return false;
    const char* a0 = static_cast<const char*>(a.data());
    const char* b0 = static_cast<const char*>(b.data());
    return a0 < b0 + b.bytes() && b0 < a0 + a.bytes();
  }

  MPI_Datatype reduce_type(const char* op, const Tensor& t) const {
    switch (t.dtype()) {
      case DType::f32: return MPI_FLOAT;
      case DType::f64: return MPI_DOUBLE;
      case DType::i32: return MPI_INT32_T;
      case DType::i64: return MPI_INT64_T;
      default: break;
    }
    fail(op, t.str() + ": reductions take f32, f64, i32 or i64 (convert bf16/f16 to f32 first)");
  }

  MPI_Datatype move_type(const char* op, const Tensor& t) const {
    switch (t.dtype()) {
      case DType::f32: return MPI_FLOAT;
      case DType::f64: return MPI_DOUBLE;
      case DType::i32: return MPI_INT32_T;
      case DType::i64: return MPI_INT64_T;
      case DType::bf16:
      case DType::f16:
      case DType::u16: return MPI_UINT16_T;
    }
    fail(op, t.str() + ": unsupported dtype");
  }

  MPI_Op mpi_op(const char* op, ReduceOp reduce) const {
    switch (reduce) {
      case ReduceOp::sum:
      case ReduceOp::avg: return MPI_SUM;
      case ReduceOp::max: return MPI_MAX;
      case ReduceOp::min: return MPI_MIN;
    }
    fail(op, "unknown reduce operation " + std::to_string(static_cast<int>(reduce)));
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
      default: break;
    }
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  int local_rank_ = 0;
  int tag_ub_ = 32767;
};

Communicator* make_mpi_comm(const Options& options) {
  options.reject_unknown();
  return new MpiCommunicator();
}

}  // namespace
}  // namespace neox

NEOX_PLUGIN(comm, "mpi", "1.0", "MPI communicator (Open MPI; host buffers; start with mpirun)",
            &neox::make_mpi_comm)
