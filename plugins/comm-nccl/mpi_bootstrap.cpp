// SPDX-License-Identifier: Apache-2.0
// MpiBootstrap (see mpi_bootstrap.h).
#include "mpi_bootstrap.h"

#include "neox/error.h"

#ifdef NEOX_NCCL_WITH_MPI
#include <dlfcn.h>
#include <mpi.h>

#include <atomic>
#include <climits>
#include <cstdlib>
#include <string>

namespace neox {
namespace {

std::string mpi_message(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) return "MPI error code " + std::to_string(code);
  return std::string(text, static_cast<std::size_t>(len));
}

void check(const char* call, int rc) {
  if (rc != MPI_SUCCESS) throw Error(std::string("MPI bootstrap: ") + call + " failed: " + mpi_message(rc));
}

std::atomic<bool> job_failed{false};

void finalize_mpi() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  if (job_failed) MPI_Abort(MPI_COMM_WORLD, 1);
  MPI_Finalize();
}

// Keeps the library holding `symbol` loaded until exit, with `extra` flags
// (RTLD_GLOBAL for libmpi: Open MPI's own plugins look its symbols up).
void pin_library(const void* symbol, int extra) {
  Dl_info info{};
  if (dladdr(symbol, &info) != 0 && info.dli_fname)
    dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE | extra);
}

}  // namespace

bool mpi_bootstrap_built() { return true; }

void mpi_bootstrap_job_failed() { job_failed = true; }

MpiBootstrap::MpiBootstrap() {
  int initialised = 0, finalized = 0;
  MPI_Initialized(&initialised);
  MPI_Finalized(&finalized);
  if (finalized) throw Error("MPI bootstrap: MPI was already finalised in this process: it cannot start again");
  if (!initialised) {
    pin_library(reinterpret_cast<const void*>(&MPI_Init_thread), RTLD_GLOBAL);
    int provided = 0;
    check("MPI_Init_thread", MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided));
    std::atexit(finalize_mpi);
  }
  check("MPI_Comm_rank", MPI_Comm_rank(MPI_COMM_WORLD, &rank_));
  check("MPI_Comm_size", MPI_Comm_size(MPI_COMM_WORLD, &size_));
}

void MpiBootstrap::broadcast(void* blob, std::size_t bytes) {
  if (bytes > INT_MAX) throw Error("MPI bootstrap: " + std::to_string(bytes) + " bytes is too many for one MPI_Bcast");
  check("MPI_Bcast", MPI_Bcast(blob, static_cast<int>(bytes), MPI_BYTE, 0, MPI_COMM_WORLD));
}

}  // namespace neox

#else  // built without MPI

namespace neox {

bool mpi_bootstrap_built() { return false; }

void mpi_bootstrap_job_failed() {}

MpiBootstrap::MpiBootstrap() {
  throw Error(
      "MPI bootstrap: this nccl plugin was built without MPI (CMake found no MPI: install libopenmpi-dev and "
      "reconfigure), so it cannot bootstrap over MPI; use bootstrap = \"tcp\" with MASTER_ADDR and MASTER_PORT");
}

void MpiBootstrap::broadcast(void*, std::size_t) {}

}  // namespace neox

#endif
