// SPDX-License-Identifier: Apache-2.0
// mpi_fault_check: a job in which one rank goes wrong, for the fault tests
// of test_comm_mpi.cpp. Run under mpirun:
//   mpirun -np N tests/mpi_fault_check PLUGIN_DIR MODE FAULTY_RANK TIMEOUT_S
// Every rank makes the `mpi` communicator with timeout_s = TIMEOUT_S and
// runs 5 steps of one all_reduce each (collectives #1 to #5); before step 3
// the faulty rank
//   hang    sleeps for 10 minutes,
//   stop    stops itself (SIGSTOP),
//   kill    kills itself (SIGKILL),
//   throw   throws a neox::Error, an error of its own: like `neox` after
//           such an error, it calls job_failed_alone() and returns 1,
//           which ends the job at exit (MPI_Abort) instead of leaving the
//           others in all_reduce #3 until their timeout,
//   behind  sleeps for 10 minutes before it would send to the last rank,
//           which, a second later than the others, waits for that message
//           (recv from FAULTY_RANK, tag 7) instead of entering step 3's
//           all_reduce: the last rank is then "behind" the others, which
//           wait in all_reduce #3.
// A rank whose communicator throws prints "mpi_fault_check: rank R: error:
// MESSAGE" and returns 1 (the plugin then ends the job at exit; the `throw`
// mode's rank through job_failed_alone()), as neox's main does. A rank
// that finishes prints "mpi_fault_check: rank R: done".
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "neox/communicator.h"
#include "neox/error.h"
#include "neox/launch.h"
#include "neox/options.h"
#include "neox/registry.h"
#include "neox/tensor.h"

using namespace neox;

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: mpi_fault_check PLUGIN_DIR hang|stop|kill|throw|behind FAULTY_RANK TIMEOUT_S\n");
    return 2;
  }
  const std::string plugin_dir = argv[1], mode = argv[2];
  const int faulty = std::atoi(argv[3]);
  int rank = -1;
  try {
    PluginRegistry registry({plugin_dir});
    Options options("plugins.options.mpi");
    options.set("timeout_s", std::strtod(argv[4], nullptr));
    std::shared_ptr<Communicator> c = registry.make_comm("mpi", options);
    rank = c->rank();
    const int last = c->size() - 1;
    Tensor t = Tensor::zeros_host({1024}, DType::f32);
    for (int step = 1; step <= 5; ++step) {
      if (step == 3 && rank == faulty) {
        std::fprintf(stderr, "mpi_fault_check: rank %d: %s before step 3\n", rank, mode.c_str());
        std::fflush(stderr);
        if (mode == "hang" || mode == "behind") sleep(600);
        if (mode == "stop") raise(SIGSTOP);
        if (mode == "kill") raise(SIGKILL);
        if (mode == "throw") throw Error("an error of this rank alone, thrown on purpose");
      }
      if (step == 3 && mode == "behind" && rank == last) {
        // One second late: the others (in all_reduce #3 since a second) time
        // out and report first, while this rank, waiting in the recv, still
        // answers their question (its own timeout comes a second after
        // theirs; seen in CI: without the delay, under load, this rank's
        // report could end the job before theirs was printed).
        sleep(1);
        Tensor message = Tensor::zeros_host({4}, DType::f32);
        c->recv(message, faulty, 7);
      }
      c->all_reduce(t, ReduceOp::sum);
    }
    std::printf("mpi_fault_check: rank %d: done\n", rank);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mpi_fault_check: rank %d: error: %s\n", rank, e.what());
    job_failed_alone();
    return 1;
  }
  return 0;
}
