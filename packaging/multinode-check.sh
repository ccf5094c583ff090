#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The multi-node check: emulates two hosts on this machine and runs neox
# across them with `mpirun --hostfile`, as docs/distributed.md describes for
# a cluster. A manual check, not CI: it needs root (network namespaces) and
# changes the network configuration while it runs.
#
#   sudo bash packaging/multinode-check.sh              # with build/bin/neox
#   sudo bash packaging/multinode-check.sh BUILD_DIR    # another finished build of this tree
#
# The two "hosts" are network namespaces nxnode1 (10.77.0.11) and nxnode2
# (10.77.0.12), each with its own network stack and, through a UTS
# namespace, its own host name, joined by a bridge (nxbr0, 10.77.0.1) on
# which mpirun itself listens. Instead of ssh, Open MPI's launcher
# (plm_rsh_agent) is a small script that runs the command inside the
# namespace of the host it is given, which is what ssh would do on a
# cluster; everything else is Open MPI's own: the hostfile, the orted
# daemons on each host, out-of-band and MPI traffic over TCP between the
# hosts (no shared memory between them, since Open MPI sees two hosts).
# What it cannot show is a real network's latency and bandwidth.
#
# Checks, each printed PASS or FAIL with its time (outputs in
# MULTINODE_CHECK_DIR/out/, default /tmp/multinode-check):
#   a  placement: 4 ranks, 2 slots per host: ranks 0-1 on nxnode1 and 2-3
#      on nxnode2, local ranks 0 and 1 on each
#   b  tests/mpi_collectives_check on 4 ranks across the hosts (every
#      collective and dtype, started operations, errors), where it was built
#   c  neox train (tiny-cpu, comm mpi, 10 steps, data parallel) on 4 ranks
#      across the hosts: the final model.safetensors is byte-identical to
#      the same run on 4 ranks on one host
#   d  the same with ZeRO-3, zero_overlap_comm (reduce-scatters during
#      backward, prefetched gathers) and a checkpoint streamed unit by unit
#   e  neox bench comm --sizes 4K,1M --runs 3 across the hosts: exit 0
#   f  kill -9 of rank 3 (on nxnode2) mid-run: the job ends non-zero within
#      30 s
# Then, where Slurm is installed (packaging/slurm-check.sh installs it;
# MULTINODE_CHECK_SLURM=0 skips this part), a Slurm cluster of the two hosts:
# slurmctld on the bridge, a slurmd in each host's namespaces (each host with
# its own /etc/hosts naming nxnode1 and nxnode2, as a cluster's DNS would),
# set up by the functions of packaging/slurm-lib.sh, and:
#   g  srun -N 2 -n 4 --mpi=none of tests/rendezvous_check, the nccl plugin's
#      TCP bootstrap without a GPU, MASTER_ADDR=nxnode1: ranks 0-1 on
#      nxnode1 and 2-3 on nxnode2 with local ranks 0-1 (read from SLURM_*
#      as the plugins read them), and every rank got rank 0's blob
#   h  srun -N 2 -n 4 --mpi=pmix neox train with ZeRO-3, overlap and
#      prefetch: model.safetensors byte-identical to d's run on one host
#   i  sbatch of the job script of docs/distributed.md (2 nodes, 2 tasks
#      each, MASTER_ADDR from `scontrol show hostnames`, MASTER_PORT from the
#      job id): the rendezvous step, then a data-parallel training step
#      whose model.safetensors is byte-identical to c's run on one host;
#      COMPLETED with exit code 0:0
#   j  kill -9 of rank 3 (on nxnode2) under srun --kill-on-bad-exit=1: srun
#      ends non-zero within 30 s
# At the end (also on failure or Ctrl-C) the Slurm daemons are stopped (and
# munged, if this started it) and the namespaces, the bridge and the
# launcher script are removed. Exit status 0 when every check passed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
repo=$(pwd)

build=${1:-build}
case "$build" in /*) ;; *) build="$repo/$build" ;; esac
neox="$build/bin/neox"
dir=${MULTINODE_CHECK_DIR:-/tmp/multinode-check}

[ "$(id -u)" = 0 ] || { echo "multinode-check: needs root (network namespaces)"; exit 2; }
[ -x "$neox" ] || { echo "multinode-check: no $neox (build first)"; exit 2; }
command -v mpirun >/dev/null || { echo "multinode-check: mpirun is missing (apt-get install openmpi-bin)"; exit 2; }
command -v ip >/dev/null && command -v unshare >/dev/null ||
  { echo "multinode-check: needs ip (iproute2) and unshare (util-linux)"; exit 2; }

sdir=$dir/slurm  # the Slurm cluster's configuration, state and logs
export SLURM_CONF=$sdir/etc/slurm.conf
# shellcheck source=packaging/slurm-lib.sh
. "$repo/packaging/slurm-lib.sh"

teardown() {
  if [ -f "$SLURM_CONF" ]; then
    slurm_pid_alive "$sdir/slurmctld.pid" && slurm_cancel_all
    slurm_stop_pidfile "slurmd on nxnode1" "$sdir/slurmd.nxnode1.pid"
    slurm_stop_pidfile "slurmd on nxnode2" "$sdir/slurmd.nxnode2.pid"
    slurm_stop_pidfile slurmctld "$sdir/slurmctld.pid"
    slurm_stop_munge "$sdir"
  fi
  ip netns del nxnode1 2>/dev/null
  ip netns del nxnode2 2>/dev/null
  ip link del nxbr0 2>/dev/null
}
teardown  # what an interrupted run left
trap teardown EXIT

rm -rf "$dir" && mkdir -p "$dir/out" || exit 2
ip link add nxbr0 type bridge && ip addr add 10.77.0.1/24 dev nxbr0 && ip link set nxbr0 up || exit 2
for n in 1 2; do
  ip netns add nxnode$n &&
    ip link add nxveth$n type veth peer name eth0 netns nxnode$n &&
    ip link set nxveth$n master nxbr0 up &&
    ip -n nxnode$n addr add 10.77.0.1$n/24 dev eth0 &&
    ip -n nxnode$n link set eth0 up &&
    ip -n nxnode$n link set lo up || exit 2
done

cat >"$dir/agent" <<'EOF'
#!/bin/bash
# ssh's stand-in: runs the command in the namespaces of the host it names.
host=$1
shift
case $host in
  10.77.0.11) ns=nxnode1 ;;
  10.77.0.12) ns=nxnode2 ;;
  *) echo "agent: unknown host $host" >&2; exit 255 ;;
esac
exec ip netns exec "$ns" unshare --uts -- /bin/sh -c "hostname $ns; $*"
EOF
chmod +x "$dir/agent"
printf '10.77.0.11 slots=2\n10.77.0.12 slots=2\n' >"$dir/hostfile"
# The hosts' /etc/hosts under Slurm, where the jobs resolve node names.
printf '127.0.0.1 localhost\n10.77.0.1 %s\n10.77.0.11 nxnode1\n10.77.0.12 nxnode2\n' "$(hostname -s)" >"$dir/hosts"

# Every run below: the hostfile, the launcher, TCP on the bridge's subnet.
across=(mpirun --allow-run-as-root --hostfile "$dir/hostfile" -np 4 --mca plm_rsh_agent "$dir/agent"
  --mca oob_tcp_if_include 10.77.0.0/24 --mca btl_tcp_if_include 10.77.0.0/24 --mca btl self,tcp,vader
  -x OMP_NUM_THREADS=1 -x NEOX_PLUGIN_PATH="$build/plugins")
one_host=(mpirun --allow-run-as-root --oversubscribe -np 4 -x OMP_NUM_THREADS=1 -x NEOX_PLUGIN_PATH="$build/plugins")

data=data/licenses_text_document
if [ ! -f "$data.idx" ]; then
  data="$dir/licenses_text_document"
  "$neox" preprocess --input /usr/share/common-licenses --output-prefix "$dir/licenses" --append-eod \
    >"$dir/out/preprocess.log" 2>&1 || { echo "multinode-check: neox preprocess failed"; exit 2; }
fi
train=(train configs/tiny-cpu.toml --set plugins.comm=mpi --set "plugins.options.mmap.data_path=$data"
  --set training.train_micro_batch_size_per_gpu=2 --set training.train_iters=10 --set training.log_interval=5
  --set training.eval_iters=0 --set training.checkpoint_factor=10)

failed=0
check() {  # name, description, then the command (its status decides)
  local name=$1 what=$2 t0=$SECONDS
  shift 2
  if "$@" >"$dir/out/$name.log" 2>&1; then
    echo "PASS $name ($((SECONDS - t0)) s): $what"
  else
    echo "FAIL $name ($((SECONDS - t0)) s): $what (log: $dir/out/$name.log)"
    tail -15 "$dir/out/$name.log" | sed 's/^/   /'
    failed=1
  fi
}

placement() {
  local got
  got=$("${across[@]}" sh -c 'echo "$OMPI_COMM_WORLD_RANK $(hostname) $OMPI_COMM_WORLD_LOCAL_RANK"' | sort)
  echo "$got"
  [ "$got" = "$(printf '0 nxnode1 0\n1 nxnode1 1\n2 nxnode2 0\n3 nxnode2 1')" ]
}

collectives() {
  local bin="$build/bin/neox_mpi_collectives_check"
  [ -x "$bin" ] || { echo "not built (NEOX_BUILD_TESTS=OFF?): skipped"; return 0; }
  "${across[@]}" "$bin" "$build/plugins"
}

same_as_one_host() {  # name, extra --set arguments
  local name=$1
  shift
  "${one_host[@]}" "$neox" "${train[@]}" "$@" --set "training.log_dir=$dir/$name/one/runs" \
    --set "training.save=$dir/$name/one/ckpt" || return 1
  "${across[@]}" "$neox" "${train[@]}" "$@" --set "training.log_dir=$dir/$name/two/runs" \
    --set "training.save=$dir/$name/two/ckpt" || return 1
  grep -h "step 10/10" "$dir/$name"/*/runs/*/train.log 2>/dev/null
  cmp "$dir/$name/one/ckpt/global_step10/model.safetensors" "$dir/$name/two/ckpt/global_step10/model.safetensors" &&
    echo "model.safetensors: identical"
}

bench() {
  "${across[@]}" "$neox" bench comm --sizes 4K,1M --runs 3
}

kill_rank() {  # NAME RANK_VARIABLE LAUNCHER...: kill -9 rank 3 (on nxnode2) mid-run
  local name=$1 var=$2 t0=$SECONDS pid="" p
  shift 2
  "$@" "$neox" "${train[@]}" --set training.train_iters=100000 --set training.checkpoint_factor=100000 \
    --set plugins.options.mpi.timeout_s=10 --set "training.log_dir=$dir/$name/runs" &
  local job=$!
  for _ in $(seq 150); do  # rank 3's process: its environment says so
    for p in $(pgrep -f "bin/neox train" || true); do
      tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "$var=3" && pid=$p
    done
    # mid-run: once rank 0 has logged steps (metrics.jsonl not empty)
    [ -n "$pid" ] && [ -n "$(find "$dir/$name/runs" -name metrics.jsonl -size +0 2>/dev/null)" ] && break
    sleep 0.2
  done
  [ -n "$pid" ] || { echo "rank 3 never started"; kill "$job"; wait "$job"; return 1; }
  echo "killing rank 3 (pid $pid, in $(ip netns identify "$pid")) $((SECONDS - t0)) s after the start"
  local status t_kill=$SECONDS
  kill -9 "$pid"
  wait "$job"
  status=$?
  echo "the launcher exited with status $status, $((SECONDS - t_kill)) s after the kill"
  [ "$status" -ne 0 ] && [ "$status" -ne 124 ] && [ $((SECONDS - t_kill)) -le 30 ]
}

# --- Slurm across the hosts ---------------------------------------------------

start_slurm() {
  local n
  slurm_write_conf "$SLURM_CONF" "$sdir" neoxmulti "$(hostname -s)" 10.77.0.1 2 \
    nxnode1=10.77.0.11 nxnode2=10.77.0.12
  slurm_start_munge "$sdir" || return 1
  setsid slurmctld -f "$SLURM_CONF" </dev/null >"$sdir/log/slurmctld.out" 2>&1 || return 1
  for n in 1 2; do
    # nsenter, not `ip netns exec`, which mounts a fresh /sys without the
    # cgroup file system that slurmd looks for.
    setsid nsenter --net=/run/netns/nxnode$n unshare --uts --mount -- /bin/sh -c \
      "mount --bind '$dir/hosts' /etc/hosts && hostname nxnode$n && exec slurmd -N nxnode$n -f '$SLURM_CONF'" \
      </dev/null >"$sdir/log/slurmd.nxnode$n.out" 2>&1 || return 1
  done
  slurm_wait_idle 30 nxnode1 nxnode2 || { echo "nodes not idle after 30 s (logs: $sdir/log)"; return 1; }
  sinfo -N
}

srun_rendezvous() {
  local bin="$build/bin/neox_rendezvous_check" out want
  [ -x "$bin" ] || { echo "not built (NEOX_BUILD_TESTS=OFF?): skipped"; return 0; }
  out=$(MASTER_ADDR=nxnode1 MASTER_PORT=29517 timeout 120 srun -N 2 -n 4 --mpi=none "$bin" 30) || return 1
  echo "$out"
  want=$(printf 'rendezvous: rank %s from Slurm (srun) on %s\n' "0 of 4 (local 0 of 2)" nxnode1 \
    "1 of 4 (local 1 of 2)" nxnode1 "2 of 4 (local 0 of 2)" nxnode2 "3 of 4 (local 1 of 2)" nxnode2)
  [ "$(echo "$out" | sed 's/: blob .*//' | sort)" = "$want" ] || { echo "placement differs from:"; echo "$want"; return 1; }
  [ "$(echo "$out" | grep -o 'blob [0-9a-f]*' | sort -u | wc -l)" = 1 ] || { echo "the blobs differ"; return 1; }
}

srun_same_as_one_host() {
  local ref="$dir/zero3/one/ckpt/global_step10/model.safetensors"
  local zero3=(--set training.zero_stage=3 --set training.zero_overlap_comm=true)
  if [ ! -f "$ref" ]; then
    "${one_host[@]}" "$neox" "${train[@]}" "${zero3[@]}" --set "training.log_dir=$dir/zero3/one/runs" \
      --set "training.save=$dir/zero3/one/ckpt" || return 1
  fi
  timeout 300 srun -N 2 -n 4 --mpi=pmix --kill-on-bad-exit=1 --label "$neox" "${train[@]}" "${zero3[@]}" \
    --set "training.log_dir=$dir/zero3/srun/runs" --set "training.save=$dir/zero3/srun/ckpt" || return 1
  cmp "$ref" "$dir/zero3/srun/ckpt/global_step10/model.safetensors" && echo "model.safetensors: identical"
}

sbatch_job() {
  local job="$dir/job.sh" jid state exitcode out ref="$dir/dp/one/ckpt/global_step10/model.safetensors"
  cat >"$job" <<EOF
#!/bin/bash
#SBATCH --job-name=neox-multinode
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=2
#SBATCH --cpus-per-task=1
#SBATCH --time=00:10:00
#SBATCH --output=$dir/out/i-%j.out
set -euo pipefail

export OMP_NUM_THREADS=\$SLURM_CPUS_PER_TASK
# The nccl plugin's TCP bootstrap: rank 0 runs on the first node of the job.
export MASTER_ADDR=\$(scontrol show hostnames "\$SLURM_JOB_NODELIST" | head -n 1)
export MASTER_PORT=\$((20000 + SLURM_JOB_ID % 20000))
cd "$repo"
srun --mpi=none "$build/bin/neox_rendezvous_check" 60
srun --mpi=pmix --kill-on-bad-exit=1 "$neox" ${train[*]} --set training.zero_stage=0 \\
  --set training.log_dir=$dir/dp/sbatch/runs --set training.save=$dir/dp/sbatch/ckpt
EOF
  jid=$(sbatch --parsable "$job") || return 1
  echo "job $jid"
  for _ in $(seq 600); do squeue -h -j "$jid" 2>/dev/null | grep -q . || break; sleep 0.5; done
  state=$(scontrol show job "$jid" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2)
  exitcode=$(scontrol show job "$jid" 2>/dev/null | grep -o ' ExitCode=[0-9:]*' | cut -d= -f2)
  out="$dir/out/i-$jid.out"
  cat "$out"
  echo "job $jid: $state, exit code $exitcode"
  [ "$state" = COMPLETED ] && [ "$exitcode" = 0:0 ] || return 1
  grep -q '^rendezvous: rank 0 of 4 (local 0 of 2) from Slurm (srun) on nxnode1' "$out" || return 1
  [ "$(grep -o 'blob [0-9a-f]*' "$out" | sort -u | wc -l)" = 1 ] || { echo "the blobs differ"; return 1; }
  [ ! -f "$ref" ] || { cmp "$ref" "$dir/dp/sbatch/ckpt/global_step10/model.safetensors" &&
    echo "model.safetensors: identical to c's run on one host"; }
}

check a "placement by the hostfile: 2 ranks per host, local ranks 0-1 on each" placement
check b "every collective across the hosts (mpi_collectives_check)" collectives
check c "data parallel across the hosts = one host, byte for byte" same_as_one_host dp --set training.zero_stage=0
check d "ZeRO-3 with overlap and prefetch across the hosts = one host, byte for byte" same_as_one_host zero3 \
  --set training.zero_stage=3 --set training.zero_overlap_comm=true
check e "neox bench comm across the hosts" bench
check f "a rank killed on the second host ends the job" kill_rank kill OMPI_COMM_WORLD_RANK "${across[@]}"

if [ "${MULTINODE_CHECK_SLURM:-1}" = 0 ]; then
  echo "SKIP g-j: MULTINODE_CHECK_SLURM=0"
elif ! { command -v slurmctld && command -v slurmd && command -v srun && command -v munged; } >/dev/null; then
  echo "SKIP g-j: Slurm is not installed (packaging/slurm-check.sh installs it)"
elif pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null; then
  echo "SKIP g-j: another slurmctld or slurmd runs on this machine (pgrep -a slurm)"
elif ! start_slurm >"$dir/out/slurm-start.log" 2>&1; then
  echo "FAIL Slurm did not start (log: $dir/out/slurm-start.log)"
  tail -15 "$dir/out/slurm-start.log" | sed 's/^/   /'
  failed=1
else
  check g "srun across the hosts: launch variables and the nccl plugin's TCP bootstrap" srun_rendezvous
  check h "srun: ZeRO-3 with overlap and prefetch across the hosts = one host, byte for byte" srun_same_as_one_host
  check i "sbatch: the job script of docs/distributed.md on 2 nodes" sbatch_job
  check j "srun: a rank killed on the second host ends the step" kill_rank srunkill SLURM_PROCID \
    timeout 120 srun -N 2 -n 4 --mpi=pmix --kill-on-bad-exit=1
fi
exit $failed
