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
# At the end (also on failure or Ctrl-C) the namespaces, the bridge and the
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

teardown() {
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

kill_rank() {
  local t0=$SECONDS pid="" p
  "${across[@]}" "$neox" "${train[@]}" --set training.train_iters=100000 --set training.checkpoint_factor=100000 \
    --set plugins.options.mpi.timeout_s=10 --set "training.log_dir=$dir/kill/runs" &
  local job=$!
  for _ in $(seq 100); do  # rank 3's process: its environment says so
    for p in $(pgrep -f "bin/neox train" || true); do
      tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=3 && pid=$p
    done
    # mid-run: once rank 0 has logged steps (metrics.jsonl not empty)
    [ -n "$pid" ] && [ -n "$(find "$dir/kill/runs" -name metrics.jsonl -size +0 2>/dev/null)" ] && break
    sleep 0.2
  done
  [ -n "$pid" ] || { echo "rank 3 never started"; kill "$job"; wait "$job"; return 1; }
  echo "killing rank 3 (pid $pid, in $(ip netns identify "$pid")) $((SECONDS - t0)) s after the start"
  local status t_kill=$SECONDS
  kill -9 "$pid"
  wait "$job"
  status=$?
  echo "mpirun exit status $status, $((SECONDS - t_kill)) s after the kill"
  [ "$status" -ne 0 ] && [ $((SECONDS - t_kill)) -le 30 ]
}

check a "placement by the hostfile: 2 ranks per host, local ranks 0-1 on each" placement
check b "every collective across the hosts (mpi_collectives_check)" collectives
check c "data parallel across the hosts = one host, byte for byte" same_as_one_host dp --set training.zero_stage=0
check d "ZeRO-3 with overlap and prefetch across the hosts = one host, byte for byte" same_as_one_host zero3 \
  --set training.zero_stage=3 --set training.zero_overlap_comm=true
check e "neox bench comm across the hosts" bench
check f "a rank killed on the second host ends the job" kill_rank
exit $failed
