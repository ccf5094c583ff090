// SPDX-License-Identifier: Apache-2.0
// mpi_collectives_check: run under mpirun (any number of ranks, e.g.
//   mpirun -np 2 tests/mpi_collectives_check [PLUGIN_DIR]
// ). Loads the `mpi` comm plugin through the registry and checks every
// Communicator method, for every dtype it takes, against values computed
// here, on small buffers (sent directly to every rank) and large ones (sent
// around a ring, the broadcast in several messages); then the bytes each
// operation counted (stats()) against the ring-algorithm formula; then the
// errors (non-host tensors, mismatched sizes, bad peers and roots, a
// truncated receive reported through MPI_Error_string); then the started
// (*_start) collectives, which move the communicator onto its thread, and
// everything again on that thread. Exits 0 and
// prints "OK" on every rank when all is right, non-zero on the first rank
// that sees a mismatch (mpirun then ends the job).
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "neox/communicator.h"
#include "neox/error.h"
#include "neox/options.h"
#include "neox/registry.h"
#include "neox/tensor.h"

using namespace neox;

namespace {

int failures = 0;
int my_rank = -1;

void expect(bool ok, const std::string& what) {
  if (ok) return;
  ++failures;
  std::fprintf(stderr, "mpi_collectives_check: rank %d: FAILED: %s\n", my_rank, what.c_str());
}

// An error whose message contains every one of `parts`.
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

template <typename T>
DType dtype_of();
template <>
DType dtype_of<float>() {
  return DType::f32;
}
template <>
DType dtype_of<double>() {
  return DType::f64;
}
template <>
DType dtype_of<std::int32_t>() {
  return DType::i32;
}
template <>
DType dtype_of<std::int64_t>() {
  return DType::i64;
}

// Rank r's value at element i: exact in every type.
template <typename T>
T value(int r, std::int64_t i) {
  return static_cast<T>(r + 1 + 2 * i);
}

// Lengths of the checks: a small buffer, and one large enough for the ring
// algorithms (over 64 KiB, not a multiple of the ranks).
constexpr std::int64_t kSmall = 37;
constexpr std::int64_t kLarge = 20011;

template <typename T>
void check_reductions(Communicator& c, std::int64_t len) {
  const int n = c.size(), r = c.rank();
  const std::string ty = std::string(dtype_name(dtype_of<T>())) + "[" + std::to_string(len) + "]";
  for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg, ReduceOp::max, ReduceOp::min}) {
    const std::string opn = op == ReduceOp::sum   ? "sum"
                            : op == ReduceOp::avg ? "avg"
                            : op == ReduceOp::max ? "max"
                                                  : "min";
    auto expected = [&](std::int64_t i) -> T {
      T s = 0;
      for (int q = 0; q < n; ++q) s = static_cast<T>(s + value<T>(q, i));
      switch (op) {
        case ReduceOp::sum:
          return s;
        case ReduceOp::avg:
          return static_cast<T>(s / static_cast<T>(n));
        case ReduceOp::max:
          return value<T>(n - 1, i);
        case ReduceOp::min:
          return value<T>(0, i);
      }
      return 0;
    };
    // all_reduce, in place.
    Tensor t = Tensor::zeros_host({len}, dtype_of<T>());
    for (std::int64_t i = 0; i < len; ++i) t.ptr<T>()[i] = value<T>(r, i);
    c.all_reduce(t, op);
    bool ok = true;
    for (std::int64_t i = 0; i < len; ++i) ok = ok && t.ptr<T>()[i] == expected(i);
    expect(ok, "all_reduce " + ty + " " + opn);
    // reduce_scatter: in has n*len elements, rank r gets part r.
    Tensor in = Tensor::zeros_host({n * len}, dtype_of<T>());
    for (std::int64_t i = 0; i < n * len; ++i) in.ptr<T>()[i] = value<T>(r, i);
    Tensor out = Tensor::zeros_host({len}, dtype_of<T>());
    c.reduce_scatter(in, out, op);
    ok = true;
    for (std::int64_t i = 0; i < len; ++i) ok = ok && out.ptr<T>()[i] == expected(r * len + i);
    expect(ok, "reduce_scatter " + ty + " " + opn);
  }
  // Zero elements: a no-op that must still work.
  Tensor empty = Tensor::zeros_host({0}, dtype_of<T>());
  c.all_reduce(empty, ReduceOp::sum);
}

// Data movement, checked byte for byte: every dtype, 16-bit ones included.
void check_movement(Communicator& c, DType dt, std::int64_t len) {
  const int n = c.size(), r = c.rank();
  const std::string ty = std::string(dtype_name(dt)) + "[" + std::to_string(len) + "]";
  const std::size_t es = dtype_size(dt);
  auto pattern = [&](int rank, std::int64_t i, std::size_t b) {
    return static_cast<unsigned char>((rank * 31 + i * 7 + static_cast<std::int64_t>(b) * 3 + 1) & 0xff);
  };
  auto fill = [&](Tensor& t, int rank, std::int64_t offset) {
    auto* p = static_cast<unsigned char*>(t.data()) + offset * static_cast<std::int64_t>(es);
    for (std::int64_t i = 0; i < len; ++i)
      for (std::size_t b = 0; b < es; ++b) p[i * es + b] = pattern(rank, i, b);
  };
  auto holds = [&](const Tensor& t, int rank, std::int64_t offset) {
    auto* p = static_cast<const unsigned char*>(t.data()) + offset * static_cast<std::int64_t>(es);
    for (std::int64_t i = 0; i < len; ++i)
      for (std::size_t b = 0; b < es; ++b)
        if (p[i * es + b] != pattern(rank, i, b)) return false;
    return true;
  };
  // all_gather, separate buffers and in place.
  Tensor in = Tensor::zeros_host({len}, dt);
  fill(in, r, 0);
  Tensor out = Tensor::zeros_host({n * len}, dt);
  c.all_gather(in, out);
  bool ok = true;
  for (int q = 0; q < n; ++q) ok = ok && holds(out, q, q * len);
  expect(ok, "all_gather " + ty);
  Tensor out2 = Tensor::zeros_host({n * len}, dt);
  fill(out2, r, r * len);
  Tensor mine = out2.slice(r * len, len);
  c.all_gather(mine, out2);
  ok = true;
  for (int q = 0; q < n; ++q) ok = ok && holds(out2, q, q * len);
  expect(ok, "all_gather in place " + ty);
  // broadcast from every root.
  for (int root = 0; root < n; ++root) {
    Tensor b = Tensor::zeros_host({len}, dt);
    if (r == root) fill(b, root, 0);
    c.broadcast(b, root);
    expect(holds(b, root, 0), "broadcast " + ty + " from root " + std::to_string(root));
  }
  // send/recv around a ring: even ranks send first, odd ones receive first.
  if (n > 1) {
    const int next = (r + 1) % n, prev = (r + n - 1) % n;
    Tensor s = Tensor::zeros_host({len}, dt);
    fill(s, r, 0);
    Tensor got = Tensor::zeros_host({len}, dt);
    if (r % 2 == 0) {
      c.send(s, next, 5);
      c.recv(got, prev, 5);
    } else {
      c.recv(got, prev, 5);
      c.send(s, next, 5);
    }
    expect(holds(got, prev, 0), "send/recv " + ty);
  }
}

// The bytes counted by stats() for each operation: the ring-algorithm
// convention of neox/communicator.h, written out here for N ranks and an
// n-byte buffer: all_reduce 2(N-1)n/N, reduce_scatter and all_gather
// (N-1)n/N of the larger buffer, broadcast n except on the root's
// predecessor, send n, recv and barrier 0; and nothing for a call that
// failed on its arguments.
void check_counting(Communicator& c) {
  const std::int64_t N = c.size(), r = c.rank();
  c.reset_stats();
  std::map<std::string, std::pair<std::int64_t, std::int64_t>> expected;  // op: calls, bytes
  auto expect_op = [&](const std::string& op, std::int64_t bytes) {
    ++expected[op].first;
    expected[op].second += bytes;
  };
  for (std::int64_t len : {kSmall, kLarge}) {
    const std::int64_t bytes = 4 * len;  // f32
    Tensor buf = Tensor::zeros_host({len}, DType::f32);
    c.all_reduce(buf, ReduceOp::sum);
    expect_op("all_reduce", 2 * (N - 1) * bytes / N);
    Tensor whole = Tensor::zeros_host({N * len}, DType::f32), part = Tensor::zeros_host({len}, DType::f32);
    c.reduce_scatter(whole, part, ReduceOp::avg);
    expect_op("reduce_scatter", (N - 1) * N * bytes / N);
    c.all_gather(part, whole);
    expect_op("all_gather", (N - 1) * N * bytes / N);
    for (std::int64_t root = 0; root < N; ++root) {
      c.broadcast(buf, static_cast<int>(root));
      expect_op("broadcast", r == (root + N - 1) % N ? 0 : bytes);
    }
    if (N > 1) {
      const int next = static_cast<int>((r + 1) % N), prev = static_cast<int>((r + N - 1) % N);
      Tensor got = Tensor::zeros_host({len}, DType::f32);
      if (r % 2 == 0) {
        c.send(buf, next, 3);
        c.recv(got, prev, 3);
      } else {
        c.recv(got, prev, 3);
        c.send(buf, next, 3);
      }
      expect_op("send", bytes);
      expect_op("recv", 0);
    }
  }
  c.barrier();
  expect_op("barrier", 0);
  // Refused before any message: not counted.
  Tensor bf = Tensor::zeros_host({4}, DType::bf16);
  try {
    c.all_reduce(bf, ReduceOp::sum);
  } catch (const Error&) {
  }
  const CommStats& st = c.stats();
  std::int64_t total = 0;
  for (const auto& [op, want] : expected) {
    total += want.second;
    const auto it = st.ops.find(op);
    if (it == st.ops.end()) {
      expect(false, "stats: no entry for " + op);
      continue;
    }
    expect(it->second.calls == want.first,
           "stats: " + op + " calls " + std::to_string(it->second.calls) + ", expected " + std::to_string(want.first));
    expect(it->second.bytes == want.second,
           "stats: " + op + " bytes " + std::to_string(it->second.bytes) + ", expected " + std::to_string(want.second));
    expect(it->second.seconds >= 0.0, "stats: " + op + " seconds " + std::to_string(it->second.seconds));
  }
  expect(st.ops.size() == expected.size(), "stats: " + std::to_string(st.ops.size()) +
                                               " operations counted, expected " + std::to_string(expected.size()));
  expect(st.total_bytes() == total,
         "stats: total_bytes " + std::to_string(st.total_bytes()) + ", expected " + std::to_string(total));
}

void check_errors(Communicator& c) {
  const int n = c.size(), r = c.rank();
  const std::string me = "rank " + std::to_string(r);
  float dummy[4] = {0, 0, 0, 0};
  Tensor gpu = Tensor::wrap(dummy, {4}, DType::f32, Device{DeviceType::cuda, 0});
  expect_error("all_reduce on a GPU tensor", {me, "all_reduce", "host tensors only"},
               [&] { c.all_reduce(gpu, ReduceOp::sum); });
  expect_error("broadcast on a GPU tensor", {me, "broadcast", "host tensors only"}, [&] { c.broadcast(gpu, 0); });
  Tensor bf = Tensor::zeros_host({4}, DType::bf16);
  expect_error("all_reduce bf16", {me, "all_reduce", "f32, f64, i32 or i64"}, [&] { c.all_reduce(bf, ReduceOp::sum); });
  Tensor a = Tensor::zeros_host({3}, DType::f32), b = Tensor::zeros_host({4}, DType::f32);
  expect_error("reduce_scatter sizes", {me, "reduce_scatter", "size() * out.numel()"},
               [&] { c.reduce_scatter(a, b, ReduceOp::sum); });
  expect_error("all_gather sizes", {me, "all_gather", "size() * in.numel()"}, [&] { c.all_gather(b, a); });
  Tensor d = Tensor::zeros_host({4}, DType::f64);
  Tensor bigger = Tensor::zeros_host({static_cast<std::int64_t>(4) * n}, DType::f32);
  expect_error("all_gather dtypes", {me, "all_gather", "dtypes differ"}, [&] { c.all_gather(d, bigger); });
  expect_error("broadcast root", {me, "broadcast", "root " + std::to_string(n), "not a rank"},
               [&] { c.broadcast(b, n); });
  expect_error("send to a bad peer", {me, "send", "peer -1"}, [&] { c.send(b, -1, 0); });
  expect_error("send to self", {me, "send", "is this rank"}, [&] { c.send(b, r, 0); });
  if (n > 1) expect_error("negative tag", {me, "recv", "tag -3"}, [&] { c.recv(b, r == 0 ? 1 : 0, -3); });
  // A real MPI error: rank 0 sends 4 floats, rank 1 receives into 2.
  if (n > 1 && r < 2) {
    if (r == 0) {
      c.send(b, 1, 9);
    } else {
      Tensor small = Tensor::zeros_host({2}, DType::f32);
      expect_error("truncated recv", {"rank 1", "recv", "peer 0", "MPI call failed", "truncat"},
                   [&] { c.recv(small, 0, 9); });
    }
  }
  // Fewer elements than sent is an MPI error; more is caught by the count check.
  if (n > 1 && r < 2) {
    if (r == 0) {
      Tensor two = Tensor::zeros_host({2}, DType::f32);
      c.send(two, 1, 10);
    } else {
      expect_error("short recv", {"rank 1", "recv", "received 2 elements", "sizes differ"}, [&] { c.recv(b, 0, 10); });
    }
  }
  c.barrier();
}

// The *_start calls: results as the blocking calls', in the order started
// (a blocking call in between runs after them), counted in stats() only
// once waited for, errors thrown by wait(), and a real overlap: rank 0's
// start returns while rank 1 has not yet joined.
void check_overlap(Communicator& c) {
  const int n = c.size(), r = c.rank();
  const std::string me = "rank " + std::to_string(r);
  expect(c.overlaps(), "overlaps() is false (MPI without MPI_THREAD_SERIALIZED?)");
  auto filled = [&](std::int64_t len, int salt) {
    Tensor t = Tensor::zeros_host({len}, DType::f32);
    for (std::int64_t i = 0; i < len; ++i) t.ptr<float>()[i] = static_cast<float>(r + 1 + salt * i % 97);
    return t;
  };
  auto sum_of = [&](std::int64_t i, int salt) {
    float s = 0;
    for (int q = 0; q < n; ++q) s += static_cast<float>(q + 1 + salt * i % 97);
    return s;
  };
  c.reset_stats();
  Tensor a = filled(kSmall, 1), b = filled(kLarge, 2), m = filled(kLarge, 3);
  Tensor whole = filled(n * kLarge, 4), part = Tensor::zeros_host({kLarge}, DType::f32);
  Tensor mine = filled(kSmall, 5), all = Tensor::zeros_host({n * kSmall}, DType::f32);
  const CommTicket ta = c.all_reduce_start(a, ReduceOp::sum);
  const CommTicket tb = c.all_reduce_start(b, ReduceOp::sum);
  const CommTicket ts = c.reduce_scatter_start(whole, part, ReduceOp::sum);
  expect(ta != 0 && ta < tb && tb < ts,
         "tickets increase: " + std::to_string(ta) + ", " + std::to_string(tb) + ", " + std::to_string(ts));
  expect(c.stats().ops.empty(), "stats() counted operations that were not waited for");
  c.all_reduce(m, ReduceOp::max);  // blocking: after the three above
  expect(c.stats().ops.count("all_reduce") && c.stats().ops.at("all_reduce").calls == 3 &&
             c.stats().ops.count("reduce_scatter"),
         "a blocking call completes (and counts) the operations started before it");
  const CommTicket tg = c.all_gather_start(mine, all);
  c.wait(tg);
  c.wait(ta);  // already complete: returns at once
  bool ok = true;
  for (std::int64_t i = 0; i < kSmall; ++i) ok = ok && a.ptr<float>()[i] == sum_of(i, 1);
  expect(ok, "all_reduce_start f32[" + std::to_string(kSmall) + "] sum");
  ok = true;
  for (std::int64_t i = 0; i < kLarge; ++i) ok = ok && b.ptr<float>()[i] == sum_of(i, 2);
  expect(ok, "all_reduce_start f32[" + std::to_string(kLarge) + "] sum");
  ok = true;
  for (std::int64_t i = 0; i < kLarge; ++i) ok = ok && part.ptr<float>()[i] == sum_of(r * kLarge + i, 4);
  expect(ok, "reduce_scatter_start");
  ok = true;
  for (std::int64_t i = 0; i < kLarge; ++i) ok = ok && m.ptr<float>()[i] == static_cast<float>(n + 3 * i % 97);
  expect(ok, "a blocking all_reduce between started ones");
  ok = true;
  for (int q = 0; q < n; ++q)
    for (std::int64_t i = 0; i < kSmall; ++i)
      ok = ok && all.ptr<float>()[q * kSmall + i] == static_cast<float>(q + 1 + 5 * i % 97);
  expect(ok, "all_gather_start");
  expect(c.stats().ops.at("all_gather").calls == 1, "all_gather_start counted once waited for");

  // An error of a started operation comes out of wait(); the communicator goes on.
  Tensor bf = Tensor::zeros_host({4}, DType::bf16);
  const CommTicket bad = c.all_reduce_start(bf, ReduceOp::sum);
  expect_error("all_reduce_start bf16, at wait()", {me, "all_reduce", "f32, f64, i32 or i64"}, [&] { c.wait(bad); });
  expect_error("wait for a ticket never issued", {me, "never issued"}, [&] { c.wait(bad + 1000); });

  // Overlap: rank 1 joins 300 ms late; rank 0's start returns at once and
  // its wait takes the 300 ms.
  if (n > 1) {
    Tensor big = filled(kLarge, 6);
    c.barrier();
    using Clock = std::chrono::steady_clock;
    if (r == 1) std::this_thread::sleep_for(std::chrono::milliseconds(300));
    const auto t0 = Clock::now();
    const CommTicket t = c.all_reduce_start(big, ReduceOp::sum);
    const double started = std::chrono::duration<double>(Clock::now() - t0).count();
    c.wait(t);
    const double waited = std::chrono::duration<double>(Clock::now() - t0).count();
    if (r == 0) {
      expect(started < 0.05, "all_reduce_start returned after " + std::to_string(started) + " s (expected at once)");
      // Not the full 0.3 s: the ranks leave the barrier a little apart.
      expect(waited > 0.15, "wait returned after " + std::to_string(waited) + " s, before rank 1 joined at 0.3 s");
    }
    ok = true;
    for (std::int64_t i = 0; i < kLarge; ++i) ok = ok && big.ptr<float>()[i] == sum_of(i, 6);
    expect(ok, "the late all_reduce_start");
  }
}

int run(const std::string& plugin_dir) {
  PluginRegistry registry(plugin_dir.empty() ? std::vector<std::string>{} : std::vector<std::string>{plugin_dir});
  std::shared_ptr<Communicator> c = registry.make_comm("mpi", Options("plugins.options.mpi"));
  my_rank = c->rank();
  const int n = c->size();
  expect(c->name() == "mpi", "name() is " + c->name());
  expect(n >= 1 && c->rank() >= 0 && c->rank() < n, "rank/size");
  // The local rank is the rank on one node, and what Open MPI's launcher
  // says on several (the plugin finds it with a shared-memory split).
  const char* launcher_local = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK");
  const int expected_local = launcher_local ? std::atoi(launcher_local) : c->rank();
  expect(c->local_rank() == expected_local,
         "local_rank " + std::to_string(c->local_rank()) + ", expected " + std::to_string(expected_local));
  for (std::int64_t len : {kSmall, kLarge}) {
    check_reductions<float>(*c, len);
    check_reductions<double>(*c, len);
    check_reductions<std::int32_t>(*c, len);
    check_reductions<std::int64_t>(*c, len);
  }
  // 300001 elements: over 1 MiB in 32 and 64 bits, the broadcast's chain in several messages.
  for (std::int64_t len : {std::int64_t{11}, std::int64_t{300001}})
    for (DType dt : {DType::f32, DType::f64, DType::i32, DType::i64, DType::bf16, DType::f16, DType::u16})
      check_movement(*c, dt, len);
  check_counting(*c);
  check_errors(*c);
  // From the first started operation on, every call runs on the
  // communicator's thread: everything again.
  check_overlap(*c);
  for (std::int64_t len : {kSmall, kLarge}) {
    check_reductions<float>(*c, len);
    check_reductions<std::int64_t>(*c, len);
  }
  check_movement(*c, DType::bf16, 300001);
  check_counting(*c);
  check_errors(*c);
  c->barrier();
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string plugin_dir = argc > 1 ? argv[1] : "";
  try {
    run(plugin_dir);
    // A second communicator (another registry, so the plugin may be loaded
    // anew) reuses the MPI that the first one initialised.
    const int n = run(plugin_dir);
    if (failures == 0) std::printf("mpi_collectives_check: rank %d of %d: OK\n", my_rank, n);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mpi_collectives_check: rank %d: error: %s\n", my_rank, e.what());
    return 2;
  }
  return failures == 0 ? 0 : 1;
}
