// SPDX-License-Identifier: Apache-2.0
// nccl_collectives_check: one rank of a job of the `nccl` comm plugin, run
// by tests/gpu/test_comm_nccl.cpp alone, under mpirun, or as processes that find
// each other through MASTER_ADDR/MASTER_PORT:
//   nccl_collectives_check PLUGIN_DIR [--bootstrap auto|mpi|tcp] [--timeout S] [--dead-peer]
// Makes the cuda backend and the nccl communicator through the registry and
// checks every Communicator method on GPU tensors and on host tensors (which
// the plugin stages), every dtype it takes, against values computed here;
// the byte counts of stats(); that an operation waits for the backend's
// queued work, with and without set_stream(); the started (*_start)
// operations; and the argument errors. Prints "rank R of N: OK" when all is
// right. With --dead-peer, rank 1 dies after init and rank 0's all_reduce
// must fail within the timeout naming the operation and the rank.
// Exit status: 0 OK, 1 a check failed, 2 an error, 3 no usable GPU.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "neox/backend.h"
#include "neox/communicator.h"
#include "neox/error.h"
#include "neox/options.h"
#include "neox/registry.h"
#include "neox/tensor.h"

using namespace neox;

namespace {

int failures = 0;
std::string me = "rank ?";

void expect(bool ok, const std::string& what) {
  if (ok) return;
  ++failures;
  std::fprintf(stderr, "nccl_collectives_check: %s: FAILED: %s\n", me.c_str(), what.c_str());
}

template <typename F>
void expect_error(const std::string& what, std::initializer_list<std::string> parts, F&& f) {
  try {
    f();
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& p : parts) expect(msg.find(p) != std::string::npos, what + ": '" + p + "' missing in: " + msg);
    return;
  }
  expect(false, what + ": no neox::Error thrown");
}

// Element i of a host tensor as a double, and back (bf16/f16 through float).
double get(const Tensor& t, std::int64_t i) {
  switch (t.dtype()) {
    case DType::f32:
      return t.ptr<float>()[i];
    case DType::f64:
      return t.ptr<double>()[i];
    case DType::i32:
      return t.ptr<std::int32_t>()[i];
    case DType::i64:
      return static_cast<double>(t.ptr<std::int64_t>()[i]);
    case DType::bf16:
      return bf16_to_float(t.ptr<std::uint16_t>()[i]);
    case DType::f16:
      return f16_to_float(t.ptr<std::uint16_t>()[i]);
    case DType::u16:
      return t.ptr<std::uint16_t>()[i];
  }
  return 0;
}

void put(Tensor& t, std::int64_t i, double v) {
  switch (t.dtype()) {
    case DType::f32:
      t.ptr<float>()[i] = static_cast<float>(v);
      break;
    case DType::f64:
      t.ptr<double>()[i] = v;
      break;
    case DType::i32:
      t.ptr<std::int32_t>()[i] = static_cast<std::int32_t>(v);
      break;
    case DType::i64:
      t.ptr<std::int64_t>()[i] = static_cast<std::int64_t>(v);
      break;
    case DType::bf16:
      t.ptr<std::uint16_t>()[i] = float_to_bf16(static_cast<float>(v));
      break;
    case DType::f16:
      t.ptr<std::uint16_t>()[i] = float_to_f16(static_cast<float>(v));
      break;
    case DType::u16:
      t.ptr<std::uint16_t>()[i] = static_cast<std::uint16_t>(v);
      break;
  }
}

bool is_integer(DType t) { return t == DType::i32 || t == DType::i64; }

// Rank r's value at element i: a small integer, exact in every dtype (bf16
// holds integers to 256; the sums and halves below stay within that).
double value(int r, std::int64_t i) { return r + 1 + 2 * static_cast<double>(i % 29); }

const char* op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
      return "sum";
    case ReduceOp::avg:
      return "avg";
    case ReduceOp::max:
      return "max";
    case ReduceOp::min:
      return "min";
  }
  return "?";
}

// One way of passing buffers: GPU tensors of the cuda backend, or host tensors.
struct Placement {
  Backend& backend;
  Communicator& comm;
  bool on_gpu;
  std::string name() const { return on_gpu ? "gpu" : "host"; }
  // A buffer filled by `fill(host, i)` for every element.
  template <typename Fill>
  Tensor make(Shape shape, DType dtype, Fill&& fill) const {
    Tensor h = Tensor::zeros_host(shape, dtype);
    for (std::int64_t i = 0; i < h.numel(); ++i) fill(h, i);
    return on_gpu ? backend.to_device(h) : h;
  }
  Tensor host(const Tensor& t) const { return on_gpu ? backend.to_host(t) : t; }
};

void check_reductions(const Placement& p, DType dt) {
  Communicator& c = p.comm;
  const int n = c.size(), r = c.rank();
  const std::int64_t len = 37;
  const std::string ty = std::string(dtype_name(dt)) + " on " + p.name();
  for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg, ReduceOp::max, ReduceOp::min}) {
    auto expected = [&](std::int64_t i) {
      double s = 0;
      for (int q = 0; q < n; ++q) s += value(q, i);
      switch (op) {
        case ReduceOp::sum:
          return s;
        case ReduceOp::avg:
          return is_integer(dt) ? static_cast<double>(static_cast<std::int64_t>(s) / n) : s / n;
        case ReduceOp::max:
          return value(n - 1, i);
        case ReduceOp::min:
          return value(0, i);
      }
      return 0.0;
    };
    Tensor t = p.make({len}, dt, [&](Tensor& h, std::int64_t i) { put(h, i, value(r, i)); });
    c.all_reduce(t, op);
    Tensor h = p.host(t);
    bool ok = true;
    for (std::int64_t i = 0; i < len; ++i) ok = ok && get(h, i) == expected(i);
    expect(ok, std::string("all_reduce ") + op_name(op) + " " + ty);

    Tensor in = p.make({n * len}, dt, [&](Tensor& hh, std::int64_t i) { put(hh, i, value(r, i)); });
    Tensor out = p.make({len}, dt, [](Tensor& hh, std::int64_t i) { put(hh, i, 0); });
    c.reduce_scatter(in, out, op);
    h = p.host(out);
    ok = true;
    for (std::int64_t i = 0; i < len; ++i) ok = ok && get(h, i) == expected(r * len + i);
    expect(ok, std::string("reduce_scatter ") + op_name(op) + " " + ty);
  }
}

// Data movement, byte for byte.
void check_movement(const Placement& p, DType dt) {
  Communicator& c = p.comm;
  const int n = c.size(), r = c.rank();
  const std::int64_t len = 11;
  const std::size_t es = dtype_size(dt);
  const std::string ty = std::string(dtype_name(dt)) + " on " + p.name();
  auto byte = [&](int rank, std::int64_t at) { return static_cast<unsigned char>((rank * 31 + at * 7 + 1) & 0xff); };
  // Fills elements as rank `rank` would, at element offset `offset`.
  auto filler = [&](int rank, std::int64_t offset) {
    return [&, rank, offset](Tensor& h, std::int64_t i) {
      auto* b = static_cast<unsigned char*>(h.data()) + i * static_cast<std::int64_t>(es);
      for (std::size_t k = 0; k < es; ++k) b[k] = byte(rank, (i - offset) * static_cast<std::int64_t>(es) + k);
    };
  };
  auto holds = [&](const Tensor& t, int rank, std::int64_t offset) {
    Tensor h = p.host(t);
    auto* b = static_cast<const unsigned char*>(h.data()) + offset * static_cast<std::int64_t>(es);
    for (std::int64_t k = 0; k < len * static_cast<std::int64_t>(es); ++k)
      if (b[k] != byte(rank, k)) return false;
    return true;
  };
  auto zero = [](Tensor& h, std::int64_t i) { put(h, i, 0); };

  Tensor in = p.make({len}, dt, filler(r, 0));
  Tensor out = p.make({n * len}, dt, zero);
  c.all_gather(in, out);
  bool ok = true;
  for (int q = 0; q < n; ++q) ok = ok && holds(out, q, q * len);
  expect(ok, "all_gather " + ty);

  // In place: `in` is this rank's part of `out`.
  Tensor out2 = p.make({n * len}, dt, [&](Tensor& h, std::int64_t i) {
    if (i >= r * len && i < (r + 1) * len)
      filler(r, r * len)(h, i);
    else
      put(h, i, 0);
  });
  c.all_gather(out2.slice(r * len, len), out2);
  ok = true;
  for (int q = 0; q < n; ++q) ok = ok && holds(out2, q, q * len);
  expect(ok, "all_gather in place " + ty);

  for (int root = 0; root < n; ++root) {
    Tensor b = r == root ? p.make({len}, dt, filler(root, 0)) : p.make({len}, dt, zero);
    c.broadcast(b, root);
    expect(holds(b, root, 0), "broadcast " + ty + " from root " + std::to_string(root));
  }

  if (n > 1) {  // around a ring: even ranks send first
    const int next = (r + 1) % n, prev = (r + n - 1) % n;
    Tensor s = p.make({len}, dt, filler(r, 0));
    Tensor got = p.make({len}, dt, zero);
    if (r % 2 == 0) {
      c.send(s, next, 5);
      c.recv(got, prev, 5);
    } else {
      c.recv(got, prev, 5);
      c.send(s, next, 5);
    }
    expect(holds(got, prev, 0), "send/recv " + ty);
  }
  c.barrier();
}

// stats(): the ring-algorithm bytes of communicator.h, per operation.
void check_stats(const Placement& p) {
  Communicator& c = p.comm;
  const int n = c.size(), r = c.rank();
  const std::int64_t len = 1000, bytes = len * 4;
  auto zero = [](Tensor& h, std::int64_t i) { put(h, i, 0); };
  c.reset_stats();
  Tensor a = p.make({len}, DType::f32, zero);
  c.all_reduce(a, ReduceOp::sum);
  c.all_reduce(a, ReduceOp::sum);
  Tensor big = p.make({n * len}, DType::f32, zero);
  c.reduce_scatter(big, a, ReduceOp::sum);
  c.all_gather(a, big);
  c.broadcast(a, 0);
  c.barrier();
  const CommStats& s = c.stats();
  auto op = [&](const char* name) {
    auto it = s.ops.find(name);
    return it == s.ops.end() ? CommOpStats{} : it->second;
  };
  expect(op("all_reduce").calls == 2, "stats: all_reduce calls " + std::to_string(op("all_reduce").calls));
  expect(op("all_reduce").bytes == 2 * ring_all_reduce_bytes(bytes, n),
         "stats: all_reduce bytes " + std::to_string(op("all_reduce").bytes));
  expect(op("all_reduce").seconds > 0, "stats: all_reduce seconds");
  expect(op("reduce_scatter").bytes == ring_gather_bytes(n * bytes, n), "stats: reduce_scatter bytes");
  expect(op("all_gather").bytes == ring_gather_bytes(n * bytes, n), "stats: all_gather bytes");
  const std::int64_t bcast = r == (n - 1) % n ? 0 : bytes;  // the root's (0's) predecessor sends nothing
  expect(op("broadcast").bytes == bcast, "stats: broadcast bytes " + std::to_string(op("broadcast").bytes));
  expect(op("barrier").calls == 1 && op("barrier").bytes == 0, "stats: barrier");
  expect(s.total_bytes() == 2 * ring_all_reduce_bytes(bytes, n) + 2 * ring_gather_bytes(n * bytes, n) + bcast,
         "stats: total " + std::to_string(s.total_bytes()));
  if (n > 1) {
    c.reset_stats();
    Tensor x = p.make({len}, DType::f32, zero);
    if (r == 0) c.send(x, 1, 0);
    if (r == 1) c.recv(x, 0, 0);
    if (r == 0) expect(op("send").bytes == bytes && op("recv").calls == 0, "stats: send");
    if (r == 1) expect(op("recv").calls == 1 && op("recv").bytes == 0, "stats: recv counts nothing sent");
    c.barrier();
  }
}

// A device-to-device copy queued on the backend's stream and not waited
// for: the all_reduce right after must see its result.
void check_ordering(Backend& be, Communicator& c) {
  const std::int64_t len = 1 << 22;  // 16 MiB: long enough for a race to show
  Tensor src = Tensor::empty(&be, {len}, DType::f32);
  Tensor h = Tensor::zeros_host({len}, DType::f32);
  for (std::int64_t i = 0; i < len; ++i) h.ptr<float>()[i] = static_cast<float>(i % 1000);
  be.copy(src.data(), src.device(), h.data(), h.device(), h.bytes());
  Tensor dst = Tensor::empty(&be, {len}, DType::f32);
  be.copy(dst.data(), dst.device(), src.data(), src.device(), src.bytes());  // asynchronous
  c.all_reduce(dst, ReduceOp::sum);
  Tensor back = be.to_host(dst);
  bool ok = true;
  for (std::int64_t i = 0; i < len && ok; ++i) ok = back.ptr<float>()[i] == static_cast<float>(c.size() * (i % 1000));
  expect(ok, "all_reduce after an asynchronous copy on the backend's stream");
}

// Started operations on GPU tensors, with set_stream(): ordered after the
// backend's queued work, complete at wait(), counted then; a host tensor
// runs blocking (ticket 0).
void check_started(Backend& be, Communicator& c) {
  const int n = c.size();
  expect(c.overlaps(), "overlaps() is false");
  const std::int64_t len = 1 << 22;
  Tensor h = Tensor::zeros_host({len}, DType::f32);
  for (std::int64_t i = 0; i < len; ++i) h.ptr<float>()[i] = static_cast<float>(i % 1000);
  Tensor src = be.to_device(h);
  Tensor a = Tensor::empty(&be, {len}, DType::f32), b = Tensor::empty(&be, {len}, DType::f32);
  be.copy(a.data(), a.device(), src.data(), src.device(), src.bytes());  // queued, not waited for
  c.reset_stats();
  const CommTicket ta = c.all_reduce_start(a, ReduceOp::sum);
  be.copy(b.data(), b.device(), src.data(), src.device(), src.bytes());  // beside the all_reduce
  Tensor whole = Tensor::empty(&be, {n * 1024}, DType::f32), part = Tensor::empty(&be, {1024}, DType::f32);
  be.copy(whole.data(), whole.device(), src.data(), src.device(), whole.bytes());
  const CommTicket ts = c.reduce_scatter_start(whole, part, ReduceOp::sum);
  expect(ta != 0 && ts > ta, "tickets " + std::to_string(ta) + ", " + std::to_string(ts));
  expect(c.stats().ops.empty(), "started operations counted before wait()");
  c.wait(ts);
  expect(c.stats().ops.count("all_reduce") && c.stats().ops.count("reduce_scatter"), "counted after wait()");
  Tensor ha = be.to_host(a), hb = be.to_host(b), hp = be.to_host(part);
  bool ok = true;
  for (std::int64_t i = 0; i < len && ok; ++i) ok = ha.ptr<float>()[i] == static_cast<float>(n * (i % 1000));
  expect(ok, "all_reduce_start after an asynchronous copy");
  ok = true;
  for (std::int64_t i = 0; i < len && ok; ++i) ok = hb.ptr<float>()[i] == static_cast<float>(i % 1000);
  expect(ok, "the copy queued beside the started all_reduce");
  ok = true;
  for (std::int64_t i = 0; i < 1024 && ok; ++i)
    ok = hp.ptr<float>()[i] == static_cast<float>(n * ((c.rank() * 1024 + i) % 1000));
  expect(ok, "reduce_scatter_start");
  Tensor host = Tensor::zeros_host({8}, DType::f32);
  expect(c.all_reduce_start(host, ReduceOp::sum) == 0, "a host tensor runs blocking (ticket 0)");
}

void check_errors(Backend& be, Communicator& c) {
  const int n = c.size(), r = c.rank();
  const std::string who = "rank " + std::to_string(r) + " of " + std::to_string(n);
  float dummy[4] = {0, 0, 0, 0};
  Tensor elsewhere = Tensor::wrap(dummy, {4}, DType::f32, Device{DeviceType::cuda, 97});
  expect_error("a tensor on another GPU", {who, "all_reduce", "cuda:97", "not on this communicator's GPU"},
               [&] { c.all_reduce(elsewhere, ReduceOp::sum); });
  Tensor u = Tensor::empty(&be, {4}, DType::u16);
  expect_error("u16 reduction", {who, "all_reduce", "reductions take"}, [&] { c.all_reduce(u, ReduceOp::sum); });
  Tensor a = Tensor::empty(&be, {3}, DType::f32), b = Tensor::empty(&be, {4}, DType::f32);
  expect_error("reduce_scatter sizes", {who, "reduce_scatter", "size() * out.numel()"},
               [&] { c.reduce_scatter(a, b, ReduceOp::sum); });
  expect_error("all_gather sizes", {who, "all_gather", "size() * in.numel()"}, [&] { c.all_gather(b, a); });
  Tensor d = Tensor::empty(&be, {4 * n}, DType::f64);
  expect_error("all_gather dtypes", {who, "all_gather", "dtypes differ"}, [&] { c.all_gather(b, d); });
  // `in` overlaps `out` one element past the start: never this rank's part.
  Tensor whole = Tensor::empty(&be, {4 * n + 1}, DType::f32);
  Tensor out = whole.slice(0, 4 * n);
  expect_error("all_gather overlap", {who, "all_gather", "overlaps"}, [&] { c.all_gather(whole.slice(1, 4), out); });
  expect_error("broadcast root", {who, "broadcast", "root " + std::to_string(n), "not a rank"},
               [&] { c.broadcast(b, n); });
  expect_error("send to self", {who, "send", "is this rank"}, [&] { c.send(b, r, 0); });
  if (n > 1) expect_error("negative tag", {who, "recv", "tag -3"}, [&] { c.recv(b, (r + 1) % n, -3); });
}

void run(const std::string& plugin_dir, const std::string& bootstrap, double timeout, bool dead_peer) {
  PluginRegistry registry(plugin_dir.empty() ? std::vector<std::string>{} : std::vector<std::string>{plugin_dir});
  std::shared_ptr<Backend> be = registry.make_backend("cuda", {}, {});
  Options options("plugins.options.nccl");
  options.set("bootstrap", bootstrap);
  options.set("timeout_s", timeout);
  std::shared_ptr<Communicator> c = registry.make_comm("nccl", options);
  const int n = c->size(), r = c->rank();
  me = "rank " + std::to_string(r) + " of " + std::to_string(n);
  expect(c->name() == "nccl", "name() is " + c->name());
  if (dead_peer) {
    if (r == 1) {
      std::printf("nccl_collectives_check: %s: leaving without a word\n", me.c_str());
      std::fflush(stdout);
      std::_Exit(0);
    }
    Tensor t = Tensor::zeros_host({16}, DType::f32);
    expect_error("all_reduce with a dead peer", {"rank 0 of 2", "all_reduce", "aborted"},
                 [&] { c->all_reduce(t, ReduceOp::sum); });
    expect_error("the call after", {"all_reduce", "failed earlier"}, [&] { c->barrier(); });
    return;
  }
  for (bool on_gpu : {true, false}) {
    const Placement p{*be, *c, on_gpu};
    for (DType dt : {DType::f32, DType::f64, DType::i32, DType::i64, DType::bf16, DType::f16}) check_reductions(p, dt);
    for (DType dt : {DType::f32, DType::f64, DType::i32, DType::bf16, DType::u16}) check_movement(p, dt);
    check_stats(p);
  }
  check_ordering(*be, *c);
  c->set_stream(be->native_stream());
  check_ordering(*be, *c);
  check_started(*be, *c);
  check_errors(*be, *c);
  c->barrier();
}

}  // namespace

int main(int argc, char** argv) {
  std::string plugin_dir, bootstrap = "auto";
  double timeout = 60;
  bool dead_peer = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--bootstrap" && i + 1 < argc)
      bootstrap = argv[++i];
    else if (a == "--timeout" && i + 1 < argc)
      timeout = std::atof(argv[++i]);
    else if (a == "--dead-peer")
      dead_peer = true;
    else
      plugin_dir = a;
  }
  try {
    run(plugin_dir, bootstrap, timeout, dead_peer);
    if (failures == 0) std::printf("nccl_collectives_check: %s: OK\n", me.c_str());
  } catch (const DeviceUnavailable& e) {
    std::printf("nccl_collectives_check: no usable GPU: %s\n", e.what());
    return 3;
  } catch (const std::exception& e) {
    std::printf("nccl_collectives_check: %s: error: %s\n", me.c_str(), e.what());
    return 2;
  }
  return failures == 0 ? 0 : 1;
}
