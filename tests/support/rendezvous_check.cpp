// SPDX-License-Identifier: Apache-2.0
// rendezvous_check: the nccl plugin's TCP bootstrap without a GPU. Start it
// as the nccl plugin would be started: by srun (no --mpi needed), torchrun,
// mpirun or by hand, with MASTER_ADDR and MASTER_PORT set on every rank, e.g.
//   export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1) MASTER_PORT=29500
//   srun --mpi=none neox_rendezvous_check [TIMEOUT_S]
// Each process reads its place with detect_launch() (the code the plugins
// use), rank 0 draws a 128-byte blob (the size of NCCL's unique id) and
// hands it out through TcpRendezvous, and every rank prints one line
//   rendezvous: rank R of N (local L of M) from LAUNCHER on HOST: blob HASH
// The blobs agree when every HASH is the same; packaging/multinode-check.sh
// checks that across two emulated hosts. Exits 1 with the error (which names
// MASTER_ADDR:MASTER_PORT and the rank) when the rendezvous fails.
#include <unistd.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <random>
#include <string>

#include "neox/error.h"
#include "neox/launch.h"
#include "tcp_rendezvous.h"

int main(int argc, char** argv) {
  const double timeout_s = argc > 1 ? std::atof(argv[1]) : 60.0;
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  try {
    const neox::LaunchInfo launch = neox::detect_launch();
    for (const std::string& note : launch.notes) std::fprintf(stderr, "rendezvous: note: %s\n", note.c_str());
    std::array<unsigned char, 128> blob{};
    if (launch.rank == 0) {
      std::random_device random;
      for (unsigned char& b : blob) b = static_cast<unsigned char>(random());
    }
    if (launch.world_size > 1) {
      if (launch.master_addr.empty() || launch.master_port.empty())
        throw neox::Error("MASTER_ADDR and MASTER_PORT must be set on every rank");
      neox::TcpRendezvous(launch.master_addr, launch.master_port, launch.rank, launch.world_size, timeout_s)
          .broadcast(blob.data(), blob.size());
    }
    std::uint64_t hash = 1469598103934665603ull;  // FNV-1a
    for (unsigned char b : blob) hash = (hash ^ b) * 1099511628211ull;
    std::printf("rendezvous: %s on %s: blob %016llx\n", launch.str().c_str(), host,
                static_cast<unsigned long long>(hash));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rendezvous: on %s: %s\n", host, e.what());
    return 1;
  }
}
