#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The Slurm check: starts a one-node Slurm cluster on this machine and runs
# neox under `srun --mpi=pmix` with the mpi comm plugin, to show that the
# launch described in docs/distributed.md (Open MPI direct-launched by srun
# through PMIx) works. A manual check, too heavy for CI: it installs packages
# and starts daemons. Run it as root on Debian 12 (bookworm) or similar.
#
#   sudo bash packaging/slurm-check.sh              # with build/bin/neox
#   sudo bash packaging/slurm-check.sh BUILD_DIR    # another finished build of this tree
#
# Setup (idempotent, with the functions of packaging/slurm-lib.sh): installs
# slurmctld, slurmd, slurm-client and munge with apt-get where slurmctld,
# slurmd, srun or munged are missing (Debian's Open
# MPI 4.1 and Slurm 22.05 both come with PMIx 4, so `srun --mpi=list` lists
# pmix); writes a slurm.conf for one node (this host, 127.0.0.1, all its CPUs,
# ProctrackType=proctrack/linuxproc and TaskPlugin=task/none: no cgroups
# needed, MpiDefault=pmix, one partition with OverSubscribe=FORCE) and keeps
# it and all Slurm state and logs under SLURM_CHECK_DIR (default
# /tmp/slurm-check), nothing under /etc/slurm; starts munged (unless a working
# one answers), slurmctld and slurmd as plain background processes (no
# systemd needed) and waits for `sinfo` to show the node idle. Daemons left by
# an earlier run of this script are stopped first; another Slurm running on
# the machine is an error.
#
# Checks, each printed PASS or FAIL with its time (outputs in
# SLURM_CHECK_DIR/out/):
#   a  srun -n 2 --mpi=pmix neox train configs/tiny-cpu.toml, comm mpi, 5 steps:
#      exit 0, "comm mpi (2 ranks)", the step lines from rank 0 only, every
#      line of task 1 (srun --label) carrying "[rank 1]"
#   b  the same with training.zero_stage=2 (optimizer zero, ZeRO stage 2)
#   c  srun -n 2 --mpi=pmix neox bench comm --sizes 4K,1M --runs 3: exit 0,
#      8 rows, all ranks matching
#   d  sbatch of a job script like the one in docs/distributed.md (CPU, 2
#      tasks, srun --mpi=pmix inside): COMPLETED, exit code 0:0, the run in
#      its output file
#   e  kill -9 of rank 1 mid-run: srun ends non-zero naming task 1, within
#      20 s
#   f  SIGSTOP of rank 0 mid-run, plugins.options.mpi.timeout_s=5: rank 1
#      times out naming rank 0 as not responding ("[rank 1] error comm 'mpi'
#      (rank 1 of 2) ... rank 0 not responding"), the job ends non-zero
#      within 20 s
# The data is the repository's data/licenses_text_document (packaging/demo.sh
# makes it); where it is missing, `neox preprocess` makes it under
# SLURM_CHECK_DIR from /usr/share/common-licenses.
#
# At the end (also on failure or Ctrl-C) it cancels its jobs and stops
# slurmd, slurmctld and the munged that it (or an earlier run of it) started;
# a munged that was running before is left running. SLURM_CHECK_KEEP=1 leaves them
# running (then `export SLURM_CONF=SLURM_CHECK_DIR/etc/slurm.conf` to use
# sinfo, srun and sbatch by hand, and run the script again to stop them, or
# kill the PIDs in SLURM_CHECK_DIR/*.pid). Exit status 0 when every check
# passed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
repo=$(pwd)

build=${1:-build}
case "$build" in /*) ;; *) build="$repo/$build" ;; esac
neox="$build/bin/neox"
dir=${SLURM_CHECK_DIR:-/tmp/slurm-check}
conf="$dir/etc/slurm.conf"
export SLURM_CONF="$conf"
host=$(hostname -s)

die() { echo "slurm-check: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "run as root (it installs packages and starts the Slurm daemons)"

# --- the cluster -------------------------------------------------------------

# shellcheck source=packaging/slurm-lib.sh
. "$repo/packaging/slurm-lib.sh"
slurmd_pid="$dir/slurmd.$host.pid"

stop_cluster() {
  slurm_pid_alive "$dir/slurmctld.pid" && slurm_cancel_all
  slurm_stop_pidfile slurmd "$slurmd_pid"
  slurm_stop_pidfile slurmctld "$dir/slurmctld.pid"
  slurm_stop_munge "$dir"
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "${SLURM_CHECK_KEEP:-0}" = 1 ]; then
    echo "== daemons left running (SLURM_CHECK_KEEP=1): export SLURM_CONF=$conf"
  else
    echo "== stopping the daemons"
    stop_cluster
  fi
  exit "$rc"
}

start_cluster() {
  slurm_start_munge "$dir" || die "munge"
  setsid slurmctld -f "$conf" </dev/null >"$dir/log/slurmctld.out" 2>&1 \
    || die "slurmctld did not start: $(tail -n 5 "$dir/log/slurmctld.out" "$dir/log/slurmctld.log" 2>/dev/null)"
  for _ in $(seq 50); do slurm_pid_alive "$dir/slurmctld.pid" && break; sleep 0.2; done
  setsid slurmd -f "$conf" </dev/null >"$dir/log/slurmd.out" 2>&1 \
    || die "slurmd did not start: $(tail -n 5 "$dir/log/slurmd.out" "$dir/log/slurmd.$host.log" 2>/dev/null)"
  slurm_wait_idle 30 "$host"
  sinfo
  [ "$(sinfo -h -n "$host" -o %T 2>/dev/null)" = idle ] \
    || die "node $host not idle after 30 s (logs: $dir/log/)"
  echo "   slurmctld pid $(cat "$dir/slurmctld.pid"), slurmd pid $(cat "$slurmd_pid"); SLURM_CONF=$conf"
}

# --- the checks ----------------------------------------------------------------

npass=0; nfail=0; summary=""
result() {  # result NAME OK SECONDS DETAIL
  local word=FAIL
  if [ "$2" = 1 ]; then word=PASS; npass=$((npass + 1)); else nfail=$((nfail + 1)); fi
  printf '%s  %-2s %6.1f s  %s\n' "$word" "$1" "$3" "$4"
  summary+=$(printf '%s  %-2s %6.1f s  %s' "$word" "$1" "$3" "$4")$'\n'
}
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }
show_tail() { echo "   --- tail of $1"; tail -n "${2:-8}" "$1" | sed 's/^/   | /'; }

# srun starts the tasks on more CPUs than there are only with --overcommit.
overcommit=()
[ "$(nproc)" -ge 2 ] || overcommit=(--overcommit)

train=("$neox" train configs/tiny-cpu.toml --set plugins.comm=mpi
       --set training.log_dir="$dir/runs" --set training.save=)

check_train() {  # check_train NAME EXTRA_ARGS...
  local name=$1 out="$dir/out/$1.out" t0 rc ok=1 why=""; shift
  t0=$(now)
  timeout 300 srun -n 2 --mpi=pmix --label "${overcommit[@]}" "${train[@]}" \
    --set training.train_iters=5 "${data_set[@]}" "$@" > "$out" 2>&1
  rc=$?
  local secs; secs=$(since "$t0")
  [ $rc = 0 ] || { ok=0; why+="exit $rc; "; }
  grep -q 'comm mpi (2 ranks)' "$out" || { ok=0; why+="no 'comm mpi (2 ranks)'; "; }
  grep -q '^0: .*\[rank 0\] info step 5/5' "$out" || { ok=0; why+="no step 5/5 from rank 0; "; }
  grep -q '^[1-9]: .* step [0-9]*/' "$out" && { ok=0; why+="step lines from another rank; "; }
  grep '^1: ' "$out" | grep -qv '\[rank 1\]' && { ok=0; why+="a line of task 1 without [rank 1]; "; }
  if [ "$name" = b ]; then
    grep -q 'ZeRO stage 2 over 2 ranks' "$out" || { ok=0; why+="no 'ZeRO stage 2 over 2 ranks'; "; }
  fi
  result "$name" $ok "$secs" "${why:-$(grep -o 'step 5/5 | loss [0-9.]*' "$out" | head -n 1)}"
  [ $ok = 1 ] || show_tail "$out" 15
}

check_bench() {
  local out="$dir/out/c.out" t0 rc ok=1 why="" rows
  t0=$(now)
  timeout 300 srun -n 2 --mpi=pmix "${overcommit[@]}" "$neox" bench comm --sizes 4K,1M --runs 3 \
    --config configs/tiny-cpu.toml --set plugins.comm=mpi > "$out" 2>&1
  rc=$?
  local secs; secs=$(since "$t0")
  rows=$(grep -cE '^(all_reduce|reduce_scatter|all_gather|broadcast) .* yes$' "$out")
  [ $rc = 0 ] || { ok=0; why+="exit $rc; "; }
  grep -q '^comm mpi, 2 ranks' "$out" || { ok=0; why+="no 'comm mpi, 2 ranks'; "; }
  [ "$rows" = 8 ] || { ok=0; why+="$rows of 8 rows with all ranks matching; "; }
  result c $ok "$secs" "${why:-8 rows, all ranks match}"
  [ $ok = 1 ] || show_tail "$out" 15
}

check_sbatch() {
  local job="$dir/job.sh" t0 jid ok=1 why="" state="" exitcode="" out
  cat > "$job" <<EOF
#!/bin/bash
#SBATCH --job-name=neox-tiny
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=2
#SBATCH --cpus-per-task=1
#SBATCH --time=00:10:00
#SBATCH --output=$dir/out/d-%j.out
$([ ${#overcommit[@]} = 0 ] || echo '#SBATCH --overcommit')
set -euo pipefail

export OMP_NUM_THREADS=\$SLURM_CPUS_PER_TASK
cd "$repo"
srun --mpi=pmix --kill-on-bad-exit=1 "$neox" train configs/tiny-cpu.toml \\
  --set plugins.comm=mpi --set training.train_iters=5 \\
  --set training.log_dir=$dir/runs --set training.save= ${data_set[*]}
EOF
  t0=$(now)
  jid=$(sbatch --parsable "$job" 2>"$dir/out/d-sbatch.err") \
    || { result d 0 "$(since "$t0")" "sbatch failed: $(cat "$dir/out/d-sbatch.err")"; return; }
  for _ in $(seq 600); do
    squeue -h -j "$jid" 2>/dev/null | grep -q . || break
    sleep 0.5
  done
  local secs; secs=$(since "$t0")
  state=$(scontrol show job "$jid" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2)
  exitcode=$(scontrol show job "$jid" 2>/dev/null | grep -o ' ExitCode=[0-9:]*' | cut -d= -f2)
  out="$dir/out/d-$jid.out"
  [ "$state" = COMPLETED ] || { ok=0; why+="job $jid state ${state:-unknown}; "; }
  [ "$exitcode" = 0:0 ] || { ok=0; why+="exit code ${exitcode:-unknown}; "; }
  grep -q 'comm mpi (2 ranks)' "$out" 2>/dev/null || { ok=0; why+="no 'comm mpi (2 ranks)' in $out; "; }
  grep -q 'done after 5 steps' "$out" 2>/dev/null || { ok=0; why+="no 'done after 5 steps'; "; }
  result d $ok "$secs" "${why:-job $jid COMPLETED 0:0, $out}"
  [ $ok = 1 ] || { [ -f "$out" ] && show_tail "$out" 15; }
}

rank_pid() {  # rank_pid TAG RANK: the pid of that neox process of this check
  local p
  for p in $(pgrep -f 'neox train'); do
    tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null | grep -qx "NEOX_SLURM_CHECK=$1" || continue
    tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null | grep -qx "SLURM_PROCID=$2" && { echo "$p"; return; }
  done
}

check_fault() {  # check_fault NAME SIGNAL RANK: signal one rank mid-run
  local name=$1 sig=$2 victim_rank=$3 out="$dir/out/$1.out" tag="$1-$$" t0 tf pid spid rc ok=1 why=""
  t0=$(now)
  NEOX_SLURM_CHECK=$tag timeout 120 srun -n 2 --mpi=pmix "${overcommit[@]}" "${train[@]}" \
    --set training.train_iters=1000 --set training.log_interval=10 \
    --set plugins.options.mpi.timeout_s=5 "${data_set[@]}" > "$out" 2>&1 &
  spid=$!
  # Mid-run: after rank 0 made the run directory (past MPI_Init) and 2 s of steps.
  for _ in $(seq 300); do grep -q 'run directory' "$out" 2>/dev/null && break; sleep 0.2; done
  sleep 2
  pid=$(rank_pid "$tag" "$victim_rank")
  if [ -z "$pid" ]; then
    kill "$spid" 2>/dev/null; wait "$spid"
    result "$name" 0 "$(since "$t0")" "rank $victim_rank's process not found"; show_tail "$out" 15; return
  fi
  kill "-$sig" "$pid"
  tf=$(now)
  wait "$spid"; rc=$?
  local secs; secs=$(printf '%.1f' "$(since "$tf")")
  [ $rc != 0 ] || { ok=0; why+="exit 0; "; }
  [ $rc != 124 ] || { ok=0; why+="still running after 120 s; "; }
  [ "$(echo "$secs < 20" | bc)" = 1 ] || { ok=0; why+="ended ${secs} s after the fault; "; }
  case $sig in
    KILL) grep -q "srun: error: .*task $victim_rank: Killed" "$out" \
            || { ok=0; why+="no 'task $victim_rank: Killed'; "; } ;;
    STOP) grep -q "\[rank 1\] error comm 'mpi' (rank 1 of 2): .* timed out after 5 s" "$out" \
            || { ok=0; why+="no timeout error from rank 1; "; }
          grep -q "rank 0 not responding" "$out" || { ok=0; why+="rank 0 not named; "; } ;;
  esac
  result "$name" $ok "$secs" "${why:-SIG$sig to rank $victim_rank (pid $pid): exit $rc ${secs} s later}"
  echo "   --- $out (errors)"
  grep -E 'error|Killed|Exited' "$out" | cut -c1-300 | sed 's/^/   | /'
}

# --- main ----------------------------------------------------------------------

mkdir -p "$dir"
echo "== Slurm: install"
slurm_install "$dir/apt.log" || die "could not install Slurm"
command -v bc >/dev/null || die "bc is missing (apt-get install bc)"
srun --mpi=list 2>&1 | grep -qw pmix || die "srun --mpi=list has no pmix: $(srun --mpi=list 2>&1 | tr '\n' ' ')"

echo "== Slurm: stop what an earlier run left, write $conf"
slurm_stop_pidfile slurmd "$slurmd_pid"
slurm_stop_pidfile slurmctld "$dir/slurmctld.pid"
if pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null; then
  die "another slurmctld or slurmd runs on this machine (pgrep -a slurm); stop it first"
fi
slurm_write_conf "$conf" "$dir" neoxcheck "$host" 127.0.0.1 "$(nproc)" "$host=127.0.0.1"
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== Slurm: start munged, slurmctld, slurmd"
start_cluster
echo "   srun --mpi=list: $(srun --mpi=list 2>&1 | tail -n +2 | tr -s '\t\n' ' ')"
echo "   ompi_info: $(ompi_info 2>/dev/null | grep -E 'MCA pmix:' | awk '{print $3}' | tr '\n' ' ')"

for _ in $(seq 60); do [ -x "$neox" ] && break; sleep 2; done  # a rebuild may be replacing it
[ -x "$neox" ] || die "$neox not found: build the tree first (or pass the build directory)"

data_set=()
if [ ! -s data/licenses_text_document.bin ]; then
  echo "== data: data/licenses_text_document missing: neox preprocess into $dir/data"
  mkdir -p "$dir/data"
  "$neox" preprocess --input /usr/share/common-licenses --output-prefix "$dir/data/licenses" \
    --append-eod > "$dir/preprocess.log" 2>&1 || die "neox preprocess failed (log: $dir/preprocess.log)"
  data_set=(--set "plugins.options.mmap.data_path=$dir/data/licenses_text_document")
fi

rm -rf "$dir/out" "$dir/runs"
mkdir -p "$dir/out"
echo "== checks with $neox (outputs in $dir/out)"
check_train a
check_train b --set training.zero_stage=2
check_bench
check_sbatch
check_fault e KILL 1
check_fault f STOP 0

echo "== summary: $npass passed, $nfail failed"
printf '%s' "$summary"
[ "$nfail" = 0 ]
