// SPDX-License-Identifier: Apache-2.0
// Out-of-line pieces of the small interface headers.
#include <string>

#include "neox/arena.h"
#include "neox/communicator.h"
#include "neox/data_source.h"
#include "neox/error.h"
#include "neox/optimizer.h"
#include "neox/plugin.h"

namespace neox {

const char* split_name(Split s) {
  switch (s) {
    case Split::train:
      return "train";
    case Split::valid:
      return "valid";
    case Split::test:
      return "test";
  }
  return "?";
}

const char* plugin_kind_name(PluginKind kind) {
  switch (kind) {
    case PluginKind::backend:
      return "backend";
    case PluginKind::kernels:
      return "kernels";
    case PluginKind::comm:
      return "comm";
    case PluginKind::optimizer:
      return "optimizer";
    case PluginKind::data:
      return "data";
    case PluginKind::tokenizer:
      return "tokenizer";
  }
  static thread_local std::string unknown;
  unknown = "unknown(" + std::to_string(static_cast<std::uint32_t>(kind)) + ")";
  return unknown.c_str();
}

void Optimizer::init_arena(Backend& backend, Communicator& comm, ParameterArena& arena, float weight_decay) {
  if (arena.params_partitioned() || arena.grads_partitioned())
    throw Error("optimizer '" + name() + "': the parameter arena is partitioned, but this optimizer needs it whole");
  init(backend, comm, arena.params(), arena.grads(), arena.groups(weight_decay));
}

CommTicket Communicator::all_reduce_start(Tensor& buffer, ReduceOp op) {
  all_reduce(buffer, op);
  return 0;
}

CommTicket Communicator::reduce_scatter_start(const Tensor& in, Tensor& out, ReduceOp op) {
  reduce_scatter(in, out, op);
  return 0;
}

CommTicket Communicator::all_gather_start(const Tensor& in, Tensor& out) {
  all_gather(in, out);
  return 0;
}

void Communicator::wait(CommTicket) {}

void ParameterHooks::parameters_written(int) {}

double Optimizer::gradient_sum_squares() {
  throw Error("optimizer '" + name() + "': gradient_sum_squares() called, but it does not reduce gradients itself");
}

}  // namespace neox
