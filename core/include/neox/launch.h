// SPDX-License-Identifier: Apache-2.0
// The launch environment: which launcher started this process, and this
// process's rank, the job's size, and its place on its node, read from the
// variables the launchers set.
//
// Sources, in order of precedence (the first one present decides):
//   torchrun   RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, when
//              TORCHELASTIC_RUN_ID shows that torchrun spawned the process
//              (it is then the innermost launcher, e.g. torchrun under srun)
//   Open MPI   OMPI_COMM_WORLD_RANK, _SIZE, _LOCAL_RANK, _LOCAL_SIZE (mpirun)
//   PMIx       PMIX_RANK (srun --mpi=pmix, prterun); PMIx exports no size:
//              the size and the local rank come from the Slurm variables
//   PMI        PMI_RANK, PMI_SIZE (MPICH's Hydra, srun --mpi=pmi2); Hydra's
//              MPI_LOCALRANKID, MPI_LOCALNRANKS for the node
//   Slurm      SLURM_PROCID, SLURM_STEP_NUM_TASKS (or SLURM_NTASKS),
//              SLURM_LOCALID, and the tasks on this node from
//              SLURM_STEP_TASKS_PER_NODE (or SLURM_TASKS_PER_NODE, "2(x3),1")
//              at SLURM_NODEID, or SLURM_NTASKS_PER_NODE. Only inside a job
//              step (SLURM_STEP_ID or SLURM_STEPID set, i.e. under srun): a
//              batch script also has SLURM_PROCID=0 and SLURM_NTASKS=N, but
//              it is one process, not rank 0 of N.
//   env        RANK and WORLD_SIZE (+ LOCAL_RANK, LOCAL_WORLD_SIZE) set by
//              hand or by a launcher script (GPT-NeoX/DeepSpeed style)
//   none       one process: rank 0 of 1
//
// The launcher that started the process wins over the ones around it:
// mpirun inside an sbatch allocation (or inside srun) sets OMPI_* for each
// process it starts, while the inherited SLURM_* describe the allocation or
// the step that started mpirun's daemons. A source that lacks a value (PMIx:
// the size; PMI under Slurm: the local rank) takes it from a later source
// that agrees on the rank. Other sources that disagree with the winner are
// ignored and listed in `notes` (for the logs). A local size that no source
// gives is the world size (one node); a missing local rank is rank modulo
// the local size. Empty variables count as unset.
//
// Values must be decimal integers with rank < size and local rank < local
// size; anything else throws neox::Error naming the variable and its value.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "neox/export.h"

namespace neox {

enum class Launcher { none, torchrun, open_mpi, pmix, pmi, slurm, env };

// "none", "torchrun", "Open MPI (mpirun)", "PMIx", "PMI", "Slurm (srun)",
// "environment (RANK, WORLD_SIZE)".
NEOX_API const char* launcher_name(Launcher launcher);

struct LaunchInfo {
  Launcher launcher = Launcher::none;
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;  // index among the ranks on this node: picks the GPU
  int local_size = 1;  // ranks on this node
  // MASTER_ADDR and MASTER_PORT as set (empty when unset): the rendezvous
  // point of TCP bootstraps. Not checked here; their users check them.
  std::string master_addr;
  std::string master_port;
  // Values of other launchers that disagree with the winner, e.g.
  // "SLURM_STEP_NUM_TASKS=2 ignored: Open MPI (mpirun) started this process".
  std::vector<std::string> notes;

  // Started by an MPI launcher (Open MPI, PMIx, PMI): MPI_Init finds the job.
  bool mpi_launched() const {
    return launcher == Launcher::open_mpi || launcher == Launcher::pmix || launcher == Launcher::pmi;
  }
  // "rank 3 of 8 (local 1 of 4) from Open MPI (mpirun)"
  NEOX_API std::string str() const;
};

// Looks one environment variable up: its value, or null when unset.
using EnvLookup = std::function<const char*(const char* name)>;

// From the process environment (std::getenv).
NEOX_API LaunchInfo detect_launch();
// From `lookup`, for tests and for callers with their own environment.
NEOX_API LaunchInfo detect_launch(const EnvLookup& lookup);

// A process of a job that fails alone (an error the other ranks do not
// share) must end the whole job: the others would wait for it in their next
// collective until the comm plugin's timeout, while it waits for them in
// MPI_Finalize. Comm plugins that can end the job register how (the mpi
// plugin: MPI_Abort when the process exits); the neox program calls
// job_failed_alone() when a command ends with an error that is not a
// CollectiveError. Handlers run once each, in the calling thread, and must
// not throw.
NEOX_API void on_job_failed_alone(void (*handler)());
NEOX_API void job_failed_alone();

}  // namespace neox
