// SPDX-License-Identifier: Apache-2.0
// MpiBootstrap: the nccl plugin's way to share NCCL's unique id in a job
// started by an MPI launcher (mpirun, srun --mpi=pmix): MPI_Bcast over
// MPI_COMM_WORLD. Compiled against MPI where CMake found it
// (NEOX_NCCL_WITH_MPI); elsewhere mpi_bootstrap_built() is false and the
// constructor throws.
#pragma once

#include <cstddef>

namespace neox {

bool mpi_bootstrap_built();

// A communicator bootstrapped over MPI has failed (a rank died or timed
// out): at exit, end the job with MPI_Abort rather than MPI_Finalize, which
// would wait for the missing ranks forever. Only where this plugin
// initialised MPI; a no-op without MPI.
void mpi_bootstrap_job_failed();

class MpiBootstrap {
 public:
  // Initialises MPI (MPI_Init_thread, funneled) unless the program already
  // did; MPI is then finalised at process exit, only if this plugin
  // initialised it (the `mpi` comm plugin does the same, so either may go
  // first), or aborted after mpi_bootstrap_job_failed(). Throws neox::Error
  // with MPI's message on failure.
  MpiBootstrap();
  int rank() const { return rank_; }
  int size() const { return size_; }
  // `bytes` bytes from rank 0 of MPI_COMM_WORLD to every rank. Blocks until
  // every rank has called it: MPI has no timeout (the launcher ends the job
  // when a rank dies).
  void broadcast(void* blob, std::size_t bytes);

 private:
  int rank_ = 0;
  int size_ = 1;
};

}  // namespace neox
