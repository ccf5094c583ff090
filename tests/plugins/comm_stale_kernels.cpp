// SPDX-License-Identifier: Apache-2.0
// Test plugin: a working one-rank comm as it was built at ABI 6.0, the last
// version that covered every kind, and before the last change to
// neox/kernels.h: its descriptor says comm 6.0 and carries the fingerprint
// of another kernel table. Since then the optimizer's ABI went to 7.0 and
// the backend's to 6.1; the comm interface did not change, and a comm
// never sees the kernel table, so it must still load and work. (When the
// comm ABI itself changes, this plugin is rightly refused: update it.)
#include <cstring>
#include <string>

#include "neox/communicator.h"
#include "neox/error.h"
#include "neox/plugin.h"

namespace {

class OneRank final : public neox::Communicator {
 public:
  std::string name() const override { return "stale-kernels"; }
  int rank() const override { return 0; }
  int size() const override { return 1; }
  int local_rank() const override { return 0; }
  // Over one rank every collective leaves its buffer as it is.
  void all_reduce(neox::Tensor&, neox::ReduceOp) override {}
  void reduce_scatter(const neox::Tensor& in, neox::Tensor& out, neox::ReduceOp) override { copy(in, out); }
  void all_gather(const neox::Tensor& in, neox::Tensor& out) override { copy(in, out); }
  void broadcast(neox::Tensor&, int) override {}
  void send(const neox::Tensor&, int, int) override { throw neox::Error("comm stale-kernels: no peers"); }
  void recv(neox::Tensor&, int, int) override { throw neox::Error("comm stale-kernels: no peers"); }
  void barrier() override {}

 private:
  static void copy(const neox::Tensor& in, neox::Tensor& out) {
    if (in.bytes() != out.bytes()) throw neox::Error("comm stale-kernels: in and out differ in size");
    if (in.data() != out.data()) std::memcpy(out.data(), in.data(), in.bytes());
  }
};

neox::Communicator* make(const neox::Options&) { return new OneRank(); }

}  // namespace

extern "C" __attribute__((visibility("default"))) const neox::PluginDescriptor* neox_plugin_entry() {
  static const neox::PluginDescriptor descriptor{6,
                                                 0,
                                                 neox::PluginKind::comm,
                                                 "stale-kernels",
                                                 "0.0",
                                                 "test: a comm built against another kernel table",
                                                 reinterpret_cast<const void*>(&make),
                                                 neox::kernel_table_fingerprint() + 1};
  return &descriptor;
}
