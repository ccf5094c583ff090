// SPDX-License-Identifier: Apache-2.0
#include "gradient_average.h"

#include <algorithm>

namespace neox {

void all_reduce_in_buckets(Communicator& comm, Tensor& grads, std::int64_t bucket) {
  for (std::int64_t end = grads.numel(); end > 0;) {
    const std::int64_t begin = std::max<std::int64_t>(0, end - bucket);
    Tensor part = grads.slice(begin, end - begin);
    comm.all_reduce(part, ReduceOp::avg);
    end = begin;
  }
}

OverlappedGradientAverage::OverlappedGradientAverage(Communicator& comm, ParameterArena& arena, std::int64_t bucket)
    : comm_(comm), arena_(arena), bucket_(bucket), started_(arena.units().size(), false) {}

void OverlappedGradientAverage::arm() {
  armed_ = true;
  std::fill(started_.begin(), started_.end(), false);
}

void OverlappedGradientAverage::finish() {
  for (std::size_t u = 0; u < started_.size(); ++u)
    if (!started_[u]) start(static_cast<int>(u));
  comm_.wait(last_);
  armed_ = false;
}

void OverlappedGradientAverage::gradients_ready(int unit) {
  if (armed_ && !started_.at(static_cast<std::size_t>(unit))) start(unit);
}

void OverlappedGradientAverage::start(int unit) {
  started_[static_cast<std::size_t>(unit)] = true;
  Tensor grads = arena_.unit_grads(unit);
  for (std::int64_t begin = 0; begin < grads.numel(); begin += bucket_) {
    Tensor part = grads.slice(begin, std::min(bucket_, grads.numel() - begin));
    last_ = comm_.all_reduce_start(part, ReduceOp::avg);
  }
}

}  // namespace neox
