// SPDX-License-Identifier: Apache-2.0
// The nccl comm plugin's TCP rendezvous (plugins/comm-nccl/tcp_rendezvous.cpp),
// which needs no GPU: threads exchanging a 128-byte blob, timeouts,
// refusals, bad ports, and three processes of an srun step
// (tests/support/rendezvous_check.cpp). The plugin itself: tests/gpu/test_comm_nccl.cpp.
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <thread>
#include <vector>

#include "neox/error.h"
#include "tcp_rendezvous.h"
#include "test_support.h"

using neox::TcpRendezvous;
using neox::test::error_of;
using neox::test::free_port;
using neox::test::run_command;

namespace {

std::vector<unsigned char> pattern_blob() {
  std::vector<unsigned char> b(128);
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = static_cast<unsigned char>(i * 37 + 11);
  return b;
}

// Runs ranks 0..n-1 of a rendezvous on threads; returns each rank's blob
// (rank 0's own) and error message ("" when none).
struct RankResult {
  std::vector<unsigned char> blob = std::vector<unsigned char>(128, 0);
  std::string error;
};

std::vector<RankResult> run_ranks(const std::string& host, int port, int n, double timeout_s,
                                  const std::vector<int>& ranks, int world_size_of_last = 0) {
  std::vector<RankResult> out(ranks.size());
  std::vector<std::thread> threads;
  for (std::size_t k = 0; k < ranks.size(); ++k) {
    threads.emplace_back([&, k] {
      const int world = (k + 1 == ranks.size() && world_size_of_last) ? world_size_of_last : n;
      if (ranks[k] == 0) out[k].blob = pattern_blob();
      try {
        TcpRendezvous(host, std::to_string(port), ranks[k], world, timeout_s).broadcast(out[k].blob.data(), 128);
      } catch (const neox::Error& e) {
        out[k].error = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  return out;
}

TEST(TcpRendezvous, TwoRanksExchangeTheBlob) {
  const int port = free_port();
  auto r = run_ranks("127.0.0.1", port, 2, 20, {0, 1});
  EXPECT_EQ(r[0].error, "");
  EXPECT_EQ(r[1].error, "");
  EXPECT_EQ(r[1].blob, pattern_blob());
}

// Four ranks, the peers first (they retry until rank 0 listens), through a
// host name.
TEST(TcpRendezvous, FourRanksPeersFirstByName) {
  const int port = free_port();
  std::vector<RankResult> peers;
  std::thread late([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    auto r0 = run_ranks("localhost", port, 4, 20, {0});
    EXPECT_EQ(r0[0].error, "");
  });
  peers = run_ranks("localhost", port, 4, 20, {1, 2, 3});
  late.join();
  for (const auto& p : peers) {
    EXPECT_EQ(p.error, "");
    EXPECT_EQ(p.blob, pattern_blob());
  }
}

TEST(TcpRendezvous, WorldOfOneNeedsNoNetwork) {
  std::vector<unsigned char> blob = pattern_blob();
  TcpRendezvous("no-such-host.invalid", "1", 0, 1, 0.1).broadcast(blob.data(), blob.size());
  EXPECT_EQ(blob, pattern_blob());
}

TEST(TcpRendezvous, RankZeroTimesOutWhenNoPeerComes) {
  const int port = free_port();
  const auto start = std::chrono::steady_clock::now();
  auto r = run_ranks("127.0.0.1", port, 3, 0.4, {0});
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const std::string& e = r[0].error;
  for (const std::string& part :
       {"MASTER_ADDR:MASTER_PORT = 127.0.0.1:" + std::to_string(port), std::string("0.4 s"), std::string("rank 0 of 3"),
        std::string("0 of 2 other ranks"), std::string("missing: ranks 1, 2")})
    EXPECT_NE(e.find(part), std::string::npos) << "'" << part << "' not in: " << e;
  EXPECT_LT(took, 3.0);
}

TEST(TcpRendezvous, PeerTimesOutWithoutRankZero) {
  const int port = free_port();
  auto r = run_ranks("127.0.0.1", port, 2, 0.4, {1});
  const std::string& e = r[0].error;
  for (const std::string& part :
       {"MASTER_ADDR:MASTER_PORT = 127.0.0.1:" + std::to_string(port), std::string("0.4 s"), std::string("rank 1 of 2"),
        std::string("rank 0 did not answer"), std::string("Connection refused")})
    EXPECT_NE(e.find(part), std::string::npos) << "'" << part << "' not in: " << e;
}

TEST(TcpRendezvous, BadPortsAndHosts) {
  for (const char* port : {"abc", "0", "65536", "-1", "", "80x", "123456"}) {
    const std::string e = error_of([&] { TcpRendezvous("127.0.0.1", port, 1, 2, 1); });
    EXPECT_NE(e.find(std::string("MASTER_PORT='") + port + "' is not a port number (1 to 65535)"), std::string::npos)
        << e;
  }
  const std::string e = error_of([] { TcpRendezvous("", "29500", 1, 2, 1); });
  EXPECT_NE(e.find("MASTER_ADDR is not set"), std::string::npos) << e;
  const std::string r = error_of([] { TcpRendezvous("h", "29500", 2, 2, 1); });
  EXPECT_NE(r.find("rank 2 is not a rank of a job of 2"), std::string::npos) << r;
}

TEST(TcpRendezvous, UnresolvableHostIsNamedAfterTheTimeout) {
  auto r = run_ranks("no-such-host.invalid", free_port(), 2, 0.3, {1});
  EXPECT_NE(r[0].error.find("cannot resolve 'no-such-host.invalid'"), std::string::npos) << r[0].error;
}

TEST(TcpRendezvous, PortInUseIsNamed) {
  const int port = free_port();
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_ANY);
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  auto r = run_ranks("127.0.0.1", port, 2, 1, {0});
  ::close(fd);
  EXPECT_NE(r[0].error.find("cannot listen on port " + std::to_string(port)), std::string::npos) << r[0].error;
  EXPECT_NE(r[0].error.find("choose another MASTER_PORT"), std::string::npos) << r[0].error;
}

// A peer started with another WORLD_SIZE is refused, and rank 0 fails too.
TEST(TcpRendezvous, DifferentWorldSizesAreRefusedOnBothSides) {
  auto r = run_ranks("127.0.0.1", free_port(), 2, 10, {0, 1}, /*world_size_of_last=*/3);
  EXPECT_NE(r[0].error.find("a process with rank 1 says the world size is 3, this rank says 2"), std::string::npos)
      << r[0].error;
  EXPECT_NE(r[1].error.find("rank 0 refused this rank: the world sizes differ"), std::string::npos) << r[1].error;
}

TEST(TcpRendezvous, TwoProcessesClaimingOneRankAreRefused) {
  auto r = run_ranks("127.0.0.1", free_port(), 3, 10, {0, 1, 1});
  EXPECT_NE(r[0].error.find("two processes say they are rank 1"), std::string::npos) << r[0].error;
  const bool first_refused = r[1].error.find("another process already connected with this rank") != std::string::npos;
  const bool second_refused = r[2].error.find("another process already connected with this rank") != std::string::npos;
  EXPECT_NE(first_refused, second_refused) << r[1].error << " | " << r[2].error;
  EXPECT_EQ(first_refused ? r[2].blob : r[1].blob, pattern_blob());
}

// Something else connecting first (a port scanner, a stale client) is
// dropped; the real peer still gets the blob.
TEST(TcpRendezvous, StrangersAreIgnored) {
  const int port = free_port();
  std::thread rank0([&] {
    auto r = run_ranks("127.0.0.1", port, 2, 20, {0});
    EXPECT_EQ(r[0].error, "");
  });
  // Connects (retrying until rank 0 listens), sends an HTTP request and
  // waits until rank 0 hangs up.
  int fd = -1;
  for (int i = 0; i < 200 && fd < 0; ++i) {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      ::close(fd);
      fd = -1;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  ASSERT_GE(fd, 0);
  const char request[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_EQ(::send(fd, request, sizeof request - 1, 0), static_cast<ssize_t>(sizeof request - 1));
  char c;
  // Closed (0) or reset (-1: the rest of the request was left unread).
  EXPECT_LE(::recv(fd, &c, 1, 0), 0) << "rank 0 should close a connection that is not a rendezvous";
  ::close(fd);
  auto peer = run_ranks("127.0.0.1", port, 2, 20, {1});
  rank0.join();
  EXPECT_EQ(peer[0].error, "");
  EXPECT_EQ(peer[0].blob, pattern_blob());
}

// The rendezvous as separate processes that find their place as the nccl
// plugin does (detect_launch): three processes of one `srun` step on one
// node, meeting at MASTER_ADDR:MASTER_PORT. Each prints rank 0's blob's
// hash; all three must print the same one. (Across hosts:
// packaging/multinode-check.sh.)
TEST(TcpRendezvous, ThreeProcessesOfAnSrunStepGetRankZerosBlob) {
  const std::string bin = neox::test::build_dir_or("bin/neox_rendezvous_check", NEOX_RENDEZVOUS_CHECK_BINARY);
  const std::string port = std::to_string(free_port());
  std::string cmd = "(";
  for (int r = 0; r < 3; ++r)
    cmd +=
        "env -i SLURM_STEP_ID=0 SLURM_PROCID=" + std::to_string(r) + " SLURM_LOCALID=" + std::to_string(r) +
        " SLURM_STEP_NUM_TASKS=3 SLURM_NODEID=0 SLURM_STEP_TASKS_PER_NODE=3 MASTER_ADDR=localhost MASTER_PORT=" + port +
        " " + bin + " 30 & ";
  cmd += "wait)";
  const auto result = run_command(cmd);
  std::set<std::string> hashes;
  for (int r = 0; r < 3; ++r) {
    const std::string who =
        "rendezvous: rank " + std::to_string(r) + " of 3 (local " + std::to_string(r) + " of 3) from Slurm (srun) on ";
    const auto at = result.output.find(who);
    ASSERT_NE(at, std::string::npos) << "no line for rank " << r << ":\n" << result.output;
    const auto blob = result.output.find(": blob ", at + who.size());
    ASSERT_NE(blob, std::string::npos) << result.output;
    hashes.insert(result.output.substr(blob + 7, 16));
  }
  EXPECT_EQ(hashes.size(), 1u) << result.output;
  EXPECT_EQ(result.output.find("error"), std::string::npos) << result.output;
}

}  // namespace
