// SPDX-License-Identifier: Apache-2.0
// Communicator: collectives among the ranks of one job.
//
// Made by a `comm` plugin. All calls are blocking and collective calls must
// be made by every rank in the same order with equal-sized buffers. Buffers
// live on the device the plugin documents (host for `local` and `mpi`, GPU
// for `nccl`). Failures (a dead peer, a timeout) throw neox::Error naming
// the rank and the operation.
#pragma once

#include <string>

#include "neox/tensor.h"
#include "neox/export.h"

namespace neox {

enum class ReduceOp { sum, avg, max, min };

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
};

}  // namespace neox
