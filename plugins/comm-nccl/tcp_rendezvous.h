// SPDX-License-Identifier: Apache-2.0
// TcpRendezvous: rank 0 hands one small blob (NCCL's 128-byte unique id) to
// every other rank of a job through a TCP port, as torch's TCPStore does for
// torchrun jobs. A bootstrap rendezvous, not a data transport: one exchange
// per communicator, a few hundred bytes per rank.
//
// Rank 0 listens on MASTER_PORT on every interface; the others connect to
// MASTER_ADDR:MASTER_PORT, retrying (connection refused, host not resolvable
// yet) until the timeout. The protocol, integers as 32-bit big-endian:
//   peer -> rank 0   "NEOXRDV1", rank, world size, blob bytes      (20 bytes)
//   rank 0 -> peer   "NEOXRDV1", status, then the blob if status is 0
// Status: 0 ok, 1 the world sizes differ, 2 the rank is not in [1, world
// size), 3 another peer already claimed the rank, 4 the blob sizes differ.
// A peer that gets a non-zero status throws, and so does rank 0 (both name
// the ranks and values). Connections that do not start with the magic
// (port scanners, stale clients) are dropped and rank 0 keeps waiting.
//
// Every failure throws neox::Error naming "MASTER_ADDR:MASTER_PORT = host:port",
// the rank, and for timeouts the timeout and what was missing.
#pragma once

#include <cstddef>
#include <string>

namespace neox {

class TcpRendezvous {
 public:
  // `host` and `port` as MASTER_ADDR and MASTER_PORT give them. Throws
  // neox::Error when the host is empty, the port is not a number in
  // [1, 65535], or rank/world_size/timeout_s are out of range.
  TcpRendezvous(std::string host, const std::string& port, int rank, int world_size, double timeout_s);

  // Rank 0: sends `blob` (`bytes` bytes) to every other rank and returns
  // when all have it. Other ranks: receive rank 0's blob into `blob`. Every
  // rank passes the same `bytes`. Blocks at most about timeout_s seconds.
  void broadcast(void* blob, std::size_t bytes);

  // "MASTER_ADDR:MASTER_PORT = node1:29500", for messages.
  std::string endpoint() const;
  int port() const { return port_; }

 private:
  void serve(const void* blob, std::size_t bytes);  // rank 0
  void fetch(void* blob, std::size_t bytes);        // the others
  std::string prefix() const;

  std::string host_;
  int port_ = 0;
  int rank_ = 0;
  int world_size_ = 1;
  double timeout_s_ = 300.0;
};

}  // namespace neox
