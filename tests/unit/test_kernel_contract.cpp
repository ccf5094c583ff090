// SPDX-License-Identifier: Apache-2.0
// The SDK's statement of the kernel contract (neox/kernel_contract.h): the op
// table (arguments, roles, access, FLOPs, bytes) and the argument checks
// every backend and kernels plugin runs, on host tensors (no backend).
#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "neox/dtype.h"
#include "neox/error.h"
#include "neox/kernel_contract.h"
#include "neox/kernels.h"
#include "neox/tensor.h"

namespace {

using neox::ArgAccess;
using neox::ArgRole;
using neox::Device;
using neox::DType;
using neox::KernelArg;
using neox::KernelCall;
using neox::Tensor;
namespace check = neox::kernel_check;

// The compile-time check of the header (NEOX_KERNEL_ARGS_MATCH) accepts the
// table's lists and refuses lists that do not fit the signature.
using GeluForward = neox::detail::KernelSignature<decltype(neox::Kernels::gelu_forward)>;
constexpr KernelArg kMissingArg[] = {{"out", ArgRole::activation, ArgAccess::write}};
constexpr KernelArg kConstWritten[] = {{"out", ArgRole::activation, ArgAccess::write},
                                       {"inp", ArgRole::activation, ArgAccess::write}};
constexpr KernelArg kOutputRead[] = {{"out", ArgRole::activation, ArgAccess::read},
                                     {"inp", ArgRole::activation, ArgAccess::read}};
static_assert(GeluForward::matches(neox::kernel_args::gelu_forward));
static_assert(!GeluForward::matches(kMissingArg));
static_assert(!GeluForward::matches(kConstWritten));
static_assert(!GeluForward::matches(kOutputRead));

Tensor host(neox::Shape shape, DType dtype = DType::f32) { return Tensor::empty(nullptr, std::move(shape), dtype); }

// The message of the neox::Error that fn throws ("" and a failure if none).
std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const neox::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a neox::Error";
  return "";
}

#define EXPECT_CONTAINS(text, fragment) \
  EXPECT_NE(std::string(text).find(fragment), std::string::npos) << "'" << (fragment) << "' not in: " << (text)

TEST(KernelContract, TheTableHasEveryOpInOrderWithItsArguments) {
  const auto infos = neox::kernel_op_infos();
  const auto& names = neox::kernel_op_names();
  ASSERT_EQ(infos.size(), names.size());
  ASSERT_EQ(infos.size(), 23u);
  for (std::size_t i = 0; i < infos.size(); ++i) EXPECT_EQ(infos[i].name, names[i]);
    // Each entry is the header's list, and every op states its bytes.
#define NEOX_EXPECT_ARGS(name)                                                          \
  EXPECT_EQ(neox::kernel_op_info(#name).args.data(), neox::kernel_args::name) << #name; \
  EXPECT_NE(neox::kernel_op_info(#name).bytes, nullptr) << #name;
  NEOX_KERNEL_OPS(NEOX_EXPECT_ARGS)
#undef NEOX_EXPECT_ARGS
  // FLOPs where they bound the time: matmul and attention (not decode, which moves bytes).
  std::vector<std::string> with_flops;
  for (const auto& info : infos)
    if (info.flops) with_flops.emplace_back(info.name);
  EXPECT_EQ(with_flops, (std::vector<std::string>{"matmul", "attention_forward", "attention_backward"}));

  const auto& ln = neox::kernel_op_info("layernorm_backward");
  ASSERT_EQ(ln.args.size(), 8u);
  EXPECT_STREQ(ln.args[1].name, "dweight");
  EXPECT_EQ(ln.args[1].role, ArgRole::f32);
  EXPECT_EQ(ln.args[1].access, ArgAccess::read_write);
  EXPECT_EQ(ln.args[4].role, ArgRole::activation);
  EXPECT_EQ(ln.args[4].access, ArgAccess::read);
  EXPECT_EQ(neox::kernel_op_info("matmul").args[0].role, ArgRole::product);
  EXPECT_EQ(neox::kernel_op_info("cross_entropy_forward").args[3].role, ArgRole::index);
  EXPECT_EQ(neox::kernel_op_info("convert").args[1].role, ArgRole::native);

  const std::string msg = error_of([] { neox::kernel_op_info("gelu"); });
  EXPECT_CONTAINS(msg, "unknown kernel operation 'gelu'");
  EXPECT_CONTAINS(msg, "gelu_forward, gelu_backward");
}

TEST(KernelContract, ACallKeepsItsTensorsAndScalarsInOrder) {
  Tensor a = host({2}), b = host({3});
  const KernelCall call(a, b, true, 5, 0.5f, std::int64_t{7}, neox::AdamWParams{});
  ASSERT_EQ(call.tensors().size(), 2u);
  EXPECT_EQ(call.tensors()[0], &a);
  EXPECT_EQ(call.tensors()[1], &b);
  EXPECT_EQ(std::vector<double>(call.scalars().begin(), call.scalars().end()), (std::vector<double>{1, 5, 0.5, 7}));
}

TEST(KernelContract, MatmulFlopsAndBytes) {
  const auto& mm = neox::kernel_op_info("matmul");
  Tensor c = host({6, 5}), a = host({6, 4}), at = host({4, 6}), b = host({4, 5});
  EXPECT_DOUBLE_EQ(mm.flops(KernelCall(c, a, b, false, false, 1.0f, 0.0f)), 2.0 * 6 * 5 * 4);
  EXPECT_DOUBLE_EQ(mm.flops(KernelCall(c, at, b, true, false, 1.0f, 0.0f)), 2.0 * 6 * 5 * 4);  // K = a's rows
  // beta = 0 writes c; beta != 0 reads it too
  EXPECT_DOUBLE_EQ(mm.bytes(KernelCall(c, a, b, false, false, 1.0f, 0.0f)), 4.0 * (30 + 24 + 20));
  EXPECT_DOUBLE_EQ(mm.bytes(KernelCall(c, a, b, false, false, 1.0f, 1.0f)), 4.0 * (2 * 30 + 24 + 20));
  // A tensor of rank 3 is a matrix of its leading dimensions' rows.
  Tensor c3 = host({2, 3, 5}), a3 = host({2, 3, 4});
  EXPECT_DOUBLE_EQ(mm.flops(KernelCall(c3, a3, b, false, false, 1.0f, 0.0f)), 2.0 * 6 * 5 * 4);
  // A call that is not matmul's has none.
  EXPECT_EQ(mm.flops(KernelCall(c, a)), 0.0);
}

TEST(KernelContract, AttentionFlopsAreTheCausalHalf) {
  const int B = 2, T = 8, C = 16, H = 2;
  Tensor out = host({B, T, C}, DType::bf16), lse = host({B, H, T}), qkv = host({B, T, 3 * C}, DType::bf16);
  Tensor dqkv = host({B, T, 3 * C}, DType::bf16), dout = host({B, T, C}, DType::bf16);
  EXPECT_DOUBLE_EQ(neox::kernel_op_info("attention_forward").flops(KernelCall(out, lse, qkv, H)), 2.0 * B * T * T * C);
  EXPECT_DOUBLE_EQ(neox::kernel_op_info("attention_backward").flops(KernelCall(dqkv, dout, qkv, out, lse, H)),
                   5.0 * B * T * T * C);
  // bytes: each tensor once (bf16 out and qkv, f32 lse)
  EXPECT_DOUBLE_EQ(neox::kernel_op_info("attention_forward").bytes(KernelCall(out, lse, qkv, H)),
                   2.0 * B * T * C + 4.0 * B * H * T + 2.0 * B * T * 3 * C);
}

TEST(KernelContract, BytesCountReadWriteTwiceAndOnlyTheRowsTouched) {
  Tensor out = host({8, 16}), bias = host({16});
  EXPECT_DOUBLE_EQ(neox::kernel_op_info("add_bias").bytes(KernelCall(out, bias)), 4.0 * (2 * 128 + 16));
  Tensor y = host({10}), x = host({10});
  EXPECT_DOUBLE_EQ(neox::kernel_op_info("axpby").bytes(KernelCall(y, x, 2.0f, 0.0f)), 4.0 * 20);
  EXPECT_DOUBLE_EQ(neox::kernel_op_info("axpby").bytes(KernelCall(y, x, 2.0f, 0.5f)), 4.0 * 30);

  // embedding: 6 ids into a table of 100 rows of 4: the 6 rows, not the table
  Tensor eout = host({6, 4}, DType::bf16), ids = host({6}, DType::i32), table = host({100, 4}, DType::bf16);
  const auto& ef = neox::kernel_op_info("embedding_forward");
  EXPECT_DOUBLE_EQ(ef.bytes(KernelCall(eout, ids, table, false)), 48 + 24 + 48);
  EXPECT_DOUBLE_EQ(ef.bytes(KernelCall(eout, ids, table, true)), 48 + 24 + 2 * 48);
  Tensor dtable = host({100, 4}), dout = host({6, 4}, DType::bf16);
  EXPECT_DOUBLE_EQ(neox::kernel_op_info("embedding_backward").bytes(KernelCall(dtable, ids, dout)),
                   48 + 24 + 2 * 6 * 4 * 4);

  // attention_decode: B 2, 2 heads of 8, 10 positions, one new token at
  // position 3: positions 0..3 of both caches read, position 3 written.
  Tensor dout1 = host({2, 1, 16}, DType::bf16), kc = host({2, 2, 10, 8}, DType::bf16);
  Tensor vc = host({2, 2, 10, 8}, DType::bf16), qkv = host({2, 1, 48}, DType::bf16);
  const double per_position = 2.0 * (2 * 2 * 8 * 2);  // k and v, bf16
  EXPECT_DOUBLE_EQ(neox::kernel_op_info("attention_decode").bytes(KernelCall(dout1, kc, vc, qkv, 2, std::int64_t{3})),
                   per_position * (4 + 1) + 2 * 48 * 2 + 2 * 16 * 2);
}

// ---------------------------------------------------------------- the checks

TEST(KernelContract, ChecksReturnTheSizes) {
  Tensor c = host({6, 5}, DType::f32), at = host({4, 6}, DType::bf16), bt = host({5, 4}, DType::bf16);
  const neox::MatmulShape m = check::matmul(Device{}, c, at, bt, true, true, 1.0f, 1.0f);
  EXPECT_EQ(m.dtype, DType::bf16);
  EXPECT_EQ(m.c_dtype, DType::f32);  // a weight gradient
  EXPECT_EQ(m.M, 6);
  EXPECT_EQ(m.N, 5);
  EXPECT_EQ(m.K, 4);
  EXPECT_EQ(m.a.cols, 6);
  EXPECT_EQ(m.b.cols, 4);

  const int B = 2, NH = 3, hs = 4, C = NH * hs, maxT = 9;
  Tensor out = host({B, 2, C}, DType::f16), kc = host({B, NH, maxT, hs}, DType::f16);
  Tensor vc = host({B, NH, maxT, hs}, DType::f16), qkv = host({B, 2, 3 * C}, DType::f16);
  const neox::QkvShape q = check::attention_decode(Device{}, out, kc, vc, qkv, NH, 7);
  EXPECT_EQ(q.dtype, DType::f16);
  EXPECT_EQ(q.B, B);
  EXPECT_EQ(q.T, 2);
  EXPECT_EQ(q.C, C);
  EXPECT_EQ(q.n_head, NH);
  EXPECT_EQ(q.hs, hs);
  EXPECT_EQ(q.max_T, maxT);

  Tensor eout = host({3, 5, 8}, DType::bf16), ids = host({3, 5}, DType::i32), table = host({40, 8}, DType::bf16);
  const neox::RowsShape e = check::embedding_forward(Device{}, eout, ids, table, false);
  EXPECT_EQ(e.dtype, DType::bf16);
  EXPECT_EQ(e.rows, 15);
  EXPECT_EQ(e.cols, 8);
  EXPECT_EQ(e.table_rows, 40);

  Tensor t = host({7}, DType::f64);
  const neox::ElementsShape f = check::fill(Device{}, t, 1.0f);
  EXPECT_EQ(f.dtype, DType::f64);
  EXPECT_EQ(f.n, 7);
}

TEST(KernelContract, ChecksRefuseAWrongDtypeRole) {
  const Device host_device{};
  Tensor a = host({4, 4}, DType::bf16), b16 = host({4, 4}, DType::f16), cb = host({4, 4}, DType::bf16);
  Tensor cf16 = host({4, 4}, DType::f16), bb = host({4, 4}, DType::bf16);
  EXPECT_EQ(error_of([&] { check::matmul(host_device, cb, a, b16, false, false, 1, 0); }),
            "matmul: b f16[4, 4] on cpu must be bf16 like a bf16[4, 4] on cpu (the activations and weights of one "
            "call share one dtype: f32, bf16 or f16)");
  EXPECT_EQ(error_of([&] { check::matmul(host_device, cf16, a, bb, false, false, 1, 0); }),
            "matmul: c f16[4, 4] on cpu must be bf16 like a bf16[4, 4] on cpu, or f32 (a weight gradient)");

  Tensor out = host({4, 6}, DType::bf16), mean = host({4}, DType::bf16), rstd = host({4});
  Tensor inp = host({4, 6}, DType::bf16), w = host({6}, DType::bf16), bias = host({6}, DType::bf16);
  EXPECT_EQ(error_of([&] { check::layernorm_forward(host_device, out, mean, rstd, inp, w, bias, 1e-5f); }),
            "layernorm_forward: mean bf16[4] on cpu must be f32 whatever the compute dtype (bf16): parameter "
            "gradients, per-row statistics and optimizer state are always f32");

  Tensor losses = host({2}), lse = host({2}), logits = host({2, 5}), targets = host({2});
  EXPECT_EQ(error_of([&] { check::cross_entropy_forward(host_device, losses, lse, logits, targets); }),
            "cross_entropy_forward: targets f32[2] on cpu must be i32");

  Tensor p = host({6}, DType::bf16), g = host({6}), m = host({6}), v = host({6});
  EXPECT_EQ(error_of([&] { check::adamw_update(host_device, p, g, m, v, neox::AdamWParams{}); }),
            "adamw_update: param bf16[6] on cpu must be f32 whatever the compute dtype: parameter gradients, "
            "per-row statistics and optimizer state are always f32");

  Tensor ids = host({6}, DType::i32);
  EXPECT_EQ(error_of([&] { check::sum(host_device, ids); }), "sum: x i32[6] on cpu must be f32, bf16 or f16");
  EXPECT_EQ(error_of([&] { check::fill(host_device, ids, 0.0f); }),
            "fill: t i32[6] on cpu must be f32, f64, bf16 or f16");
  Tensor i32_inp = host({6}, DType::i32), f_out = host({6});
  EXPECT_EQ(error_of([&] { check::gelu_forward(host_device, f_out, i32_inp); }),
            "gelu_forward: inp i32[6] on cpu must be f32 like out f32[6] on cpu (the activations and weights of one "
            "call share one dtype: f32, bf16 or f16)");
  EXPECT_EQ(error_of([&] { check::gelu_forward(host_device, i32_inp, f_out); }),
            "gelu_forward: out i32[6] on cpu must be f32, bf16 or f16");
}

TEST(KernelContract, ChecksNameTheDevice) {
  std::vector<float> mem(16);
  Tensor on_gpu = Tensor::wrap(mem.data(), {16}, DType::f32, Device{neox::DeviceType::cuda, 0});
  Tensor on_host = host({16}), out = host({16});
  EXPECT_EQ(error_of([&] { check::add(Device{}, out, on_gpu, on_host); }),
            "add: a f32[16] on cuda:0 is not in host memory (the cpu backend runs on the host)");
  const Device gpu{neox::DeviceType::cuda, 0};
  EXPECT_EQ(error_of([&] { check::add(gpu, on_gpu, on_host, on_gpu); }),
            "add: a f32[16] on cpu is not on cuda:0 (the cuda backend runs on cuda:0; copy host tensors to the "
            "device first, e.g. with Backend::to_device)");
  EXPECT_EQ(error_of([&] { check::add(Device{}, out, Tensor(), on_host); }), "add: a is an undefined tensor");
}

TEST(KernelContract, ChecksRefuseWrongShapes) {
  const Device d{};
  Tensor c = host({4, 4}), a = host({4, 3}), b = host({4, 4});
  EXPECT_EQ(error_of([&] { check::matmul(d, c, a, b, false, false, 1, 0); }),
            "matmul: op(b) = b is [4, 4] (b is f32[4, 4] on cpu) but op(a) @ op(b) into c needs [3, 4] (a is "
            "f32[4, 3] on cpu, c is f32[4, 4] on cpu)");
  Tensor out = host({4, 6}), mean = host({3}), rstd = host({4}), inp = host({4, 6}), w = host({6}), bias = host({6});
  EXPECT_EQ(error_of([&] { check::layernorm_forward(d, out, mean, rstd, inp, w, bias, 1e-5f); }),
            "layernorm_forward: mean f32[3] on cpu has 3 elements, expected 4 (one value per row of inp f32[4, 6] "
            "on cpu)");
  Tensor aout = host({1, 2, 8}), lse = host({1, 5, 2}), qkv = host({1, 2, 24});
  EXPECT_EQ(error_of([&] { check::attention_forward(d, aout, lse, qkv, 5); }),
            "attention_forward: C = 8 (from qkv f32[1, 2, 24] on cpu) is not divisible by n_head = 5");
  Tensor lse2 = host({1, 2, 3});
  EXPECT_EQ(error_of([&] { check::attention_forward(d, aout, lse2, qkv, 2); }),
            "attention_forward: lse f32[1, 2, 3] on cpu has 6 elements, expected 4 ([B, n_head, T] for qkv "
            "f32[1, 2, 24] on cpu)");
  Tensor kc = host({1, 2, 6, 4}), vc = host({1, 2, 6, 4}), dout = host({1, 2, 8});
  EXPECT_CONTAINS(error_of([&] { check::attention_decode(d, dout, kc, vc, qkv, 2, 5); }),
                  "attention_decode: positions [5, 7) do not fit the cache's max_T = 6");
  Tensor x = host({10});
  EXPECT_NO_THROW(check::gelu_forward(d, x, x.slice(0, 10)));  // in place is allowed
  EXPECT_EQ(error_of([&] { check::matmul(d, b, b, b, false, false, 1, 0); }),
            "matmul: c f32[4, 4] on cpu overlaps a f32[4, 4] on cpu in memory; this operation cannot run in place");
}

TEST(KernelContract, ValueCheckMessages) {
  const neox::KernelChecker ck("embedding_forward", Device{});
  Tensor ids = host({2, 3}, DType::i32);
  EXPECT_EQ(error_of([&] { ck.id_out_of_range(ids, 4, 9, 5); }),
            "embedding_forward: id 9 at position 4 (row 1, column 1) of ids i32[2, 3] on cpu is outside the "
            "table's rows [0, 5)");
  EXPECT_EQ(error_of([&] { neox::KernelChecker("cross_entropy_forward", Device{}).target_out_of_range(3, 11, 10); }),
            "cross_entropy_forward: target 11 in row 3 is outside the vocabulary [0, 10) (negative targets mark "
            "ignored positions)");
}

}  // namespace
