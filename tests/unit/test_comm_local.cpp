// SPDX-License-Identifier: Apache-2.0
// The `local` comm plugin: a one-process communicator.
#include <gtest/gtest.h>

#include "test_support.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "neox/communicator.h"
#include "neox/error.h"
#include "neox/options.h"
#include "neox/registry.h"

namespace {

using neox::Communicator;
using neox::DType;
using neox::ReduceOp;
using neox::Tensor;

using neox::test::error_of;

class CommLocal : public ::testing::Test {
 protected:
  void SetUp() override {
    registry_ = std::make_unique<neox::PluginRegistry>();
    comm_ = registry_->make_comm("local", neox::Options("plugins.options.local"));
  }
  static Tensor host_f32(const std::vector<float>& values) {
    Tensor t = Tensor::zeros_host({static_cast<std::int64_t>(values.size())}, DType::f32);
    for (std::size_t i = 0; i < values.size(); ++i) t.ptr<float>()[i] = values[i];
    return t;
  }
  static std::vector<float> values(const Tensor& t) {
    return std::vector<float>(t.ptr<float>(), t.ptr<float>() + t.numel());
  }
  std::unique_ptr<neox::PluginRegistry> registry_;
  std::shared_ptr<Communicator> comm_;
};

TEST_F(CommLocal, IsRankZeroOfOne) {
  EXPECT_EQ(comm_->name(), "local");
  EXPECT_EQ(comm_->rank(), 0);
  EXPECT_EQ(comm_->size(), 1);
  EXPECT_EQ(comm_->local_rank(), 0);
}

TEST_F(CommLocal, AllReduceOverOneRankIsIdentity) {
  const std::vector<float> v = {1.5f, -2.0f, 3.25f, 0.0f, -0.0f, 1e30f};
  for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg, ReduceOp::max, ReduceOp::min}) {
    Tensor t = host_f32(v);
    comm_->all_reduce(t, op);
    EXPECT_EQ(values(t), v) << "op " << static_cast<int>(op);
  }
  Tensor ids = Tensor::zeros_host({3}, DType::i64);
  ids.ptr<std::int64_t>()[1] = -7;
  comm_->all_reduce(ids, ReduceOp::sum);
  EXPECT_EQ(ids.ptr<std::int64_t>()[1], -7);
  Tensor empty = Tensor::zeros_host({0}, DType::f32);
  comm_->all_reduce(empty, ReduceOp::avg);
}

TEST_F(CommLocal, ReduceScatterCopiesTheWholeInput) {
  Tensor in = host_f32({1, 2, 3, 4});
  Tensor out = host_f32({0, 0, 0, 0});
  comm_->reduce_scatter(in, out, ReduceOp::sum);
  EXPECT_EQ(values(out), values(in));
  // In place (the same memory) is allowed.
  comm_->reduce_scatter(in, in, ReduceOp::avg);
  EXPECT_EQ(values(in), (std::vector<float>{1, 2, 3, 4}));
  // Shape does not matter, element count does.
  Tensor out2d = Tensor::zeros_host({2, 2}, DType::f32);
  comm_->reduce_scatter(in, out2d, ReduceOp::max);
  EXPECT_EQ(values(out2d), values(in));
}

TEST_F(CommLocal, ReduceScatterChecksSizesAndTypes) {
  Tensor in = host_f32({1, 2, 3, 4});
  Tensor small = host_f32({0, 0});
  auto msg = error_of([&] { comm_->reduce_scatter(in, small, ReduceOp::sum); });
  EXPECT_NE(msg.find("reduce_scatter"), std::string::npos) << msg;
  EXPECT_NE(msg.find("rank 0"), std::string::npos) << msg;
  EXPECT_NE(msg.find("f32[4]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("f32[2]"), std::string::npos) << msg;
  Tensor ints = Tensor::zeros_host({4}, DType::i32);
  msg = error_of([&] { comm_->reduce_scatter(in, ints, ReduceOp::sum); });
  EXPECT_NE(msg.find("dtypes differ"), std::string::npos) << msg;
  EXPECT_EQ(values(small), (std::vector<float>{0, 0}));  // untouched
}

TEST_F(CommLocal, AllGatherCopiesAndChecksSizes) {
  Tensor in = host_f32({5, 6, 7});
  Tensor out = host_f32({0, 0, 0});
  comm_->all_gather(in, out);
  EXPECT_EQ(values(out), values(in));
  Tensor big = host_f32({0, 0, 0, 0, 0, 0});
  auto msg = error_of([&] { comm_->all_gather(in, big); });
  EXPECT_NE(msg.find("all_gather"), std::string::npos) << msg;
  EXPECT_NE(msg.find("f32[6]"), std::string::npos) << msg;
  Tensor doubles = Tensor::zeros_host({3}, DType::f64);
  msg = error_of([&] { comm_->all_gather(in, doubles); });
  EXPECT_NE(msg.find("dtypes differ"), std::string::npos) << msg;
}

TEST_F(CommLocal, BroadcastFromRootZeroOnly) {
  Tensor t = host_f32({1, 2});
  comm_->broadcast(t, 0);
  EXPECT_EQ(values(t), (std::vector<float>{1, 2}));
  for (int root : {1, -1, 7}) {
    auto msg = error_of([&] { comm_->broadcast(t, root); });
    EXPECT_NE(msg.find("broadcast"), std::string::npos) << msg;
    EXPECT_NE(msg.find("root " + std::to_string(root)), std::string::npos) << msg;
  }
}

TEST_F(CommLocal, SendAndRecvHaveNoPeers) {
  Tensor t = host_f32({1});
  auto msg = error_of([&] { comm_->send(t, 1, 3); });
  EXPECT_NE(msg.find("send"), std::string::npos) << msg;
  EXPECT_NE(msg.find("rank 1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("no peers"), std::string::npos) << msg;
  msg = error_of([&] { comm_->recv(t, 0, 0); });
  EXPECT_NE(msg.find("recv"), std::string::npos) << msg;
  EXPECT_NE(msg.find("no peers"), std::string::npos) << msg;
}

TEST_F(CommLocal, BarrierReturns) {
  comm_->barrier();
  comm_->barrier();
}

TEST_F(CommLocal, RejectsDeviceTensors) {
  float storage[2] = {1, 2};
  Tensor on_gpu = Tensor::wrap(storage, {2}, DType::f32, neox::Device{neox::DeviceType::cuda, 0});
  auto msg = error_of([&] { comm_->all_reduce(on_gpu, ReduceOp::sum); });
  EXPECT_NE(msg.find("host tensors"), std::string::npos) << msg;
  EXPECT_NE(msg.find("cuda:0"), std::string::npos) << msg;
  Tensor host = host_f32({0, 0});
  msg = error_of([&] { comm_->all_gather(on_gpu, host); });
  EXPECT_NE(msg.find("host tensors"), std::string::npos) << msg;
}

TEST_F(CommLocal, RejectsUnknownOptions) {
  neox::Options options("plugins.options.local");
  options.set("timeout", std::int64_t{30});
  auto msg = error_of([&] { registry_->make_comm("local", options); });
  EXPECT_NE(msg.find("comm plugin 'local'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("plugins.options.local.timeout"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unknown option"), std::string::npos) << msg;
}

}  // namespace
