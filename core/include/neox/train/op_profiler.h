// SPDX-License-Identifier: Apache-2.0
// OpProfiler: per-operation timings of a backend's kernel table.
//
// While an OpProfiler lives, every op of backend.kernels is wrapped: the
// backend is synchronised before and after the op, and the host time between
// is charged to the op and the shapes of its tensor arguments ("matmul
// bf16[32768,768] bf16[768,2304] ..."). The numbers are device time plus one
// launch (a few microseconds on a GPU), and the step runs without overlap of
// host and device, so a profiled step is slower than a real one; the table
// says where the time goes, not how fast a step is. Works for any backend.
//
// Each entry also has the op's floor, from the SDK's op table
// (neox/kernel_contract.h, which `neox bench op` reads too): the bytes the
// call reads and writes (a tensor read and written counts twice; embedding
// and attention_decode count the rows and positions they touch) and, for
// matmul and attention, its floating-point operations, so that a caller can
// put a lower bound next to each time.
//
// The destructor restores the table; profilers do not nest.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "neox/backend.h"
#include "neox/export.h"

namespace neox {

class NEOX_API OpProfiler {
 public:
  struct Entry {
    std::string op;      // the kernel table's name
    std::string shapes;  // dtype[shape] of each tensor argument, in order
    std::int64_t calls = 0;
    double seconds = 0;  // total over the calls
    double bytes = 0;    // per call: the bytes read and written (KernelOpInfo::bytes)
    double flops = 0;    // per call: matmul 2MNK, causal attention (0 elsewhere; KernelOpInfo::flops)
  };

  explicit OpProfiler(Backend& backend);
  ~OpProfiler();
  OpProfiler(const OpProfiler&) = delete;
  OpProfiler& operator=(const OpProfiler&) = delete;

  // Entries by decreasing total time.
  std::vector<Entry> entries() const;
  double total_seconds() const;

  // Called by the wrappers.
  void record(const char* op, const std::string& shapes, double seconds, double bytes, double flops);
  Backend& backend() { return backend_; }

 private:
  Backend& backend_;
  Kernels saved_;
  std::map<std::pair<std::string, std::string>, Entry> entries_;
};

}  // namespace neox
