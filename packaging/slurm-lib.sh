# SPDX-License-Identifier: Apache-2.0
# Shell functions for the manual checks that start a throw-away Slurm
# cluster (packaging/slurm-check.sh: one node; packaging/multinode-check.sh:
# two emulated hosts). Sourced, not run. Everything the cluster writes lives
# under the directory the caller names; nothing goes under /etc/slurm.

slurm_pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# slurm_stop_pidfile NAME FILE: TERM the process of a pid file, KILL after 10 s.
slurm_stop_pidfile() {
  local f=$2 pid
  slurm_pid_alive "$f" || { rm -f "$f"; return 0; }
  pid=$(cat "$f")
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "   $1 (pid $pid) did not stop in 10 s: SIGKILL"; kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$f"
  echo "   stopped $1 (pid $pid)"
}

# slurm_install LOG: apt-get installs slurmctld, slurmd, slurm-client and
# munge where any of their programs is missing; returns 1 on failure.
slurm_install() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
     && command -v srun >/dev/null && command -v munged >/dev/null; then
    echo "   Slurm and munge installed: $(srun --version)"
    return 0
  fi
  echo "   apt-get install slurmctld slurmd slurm-client munge"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    slurmctld slurmd slurm-client munge > "$1" 2>&1 \
    || { apt-get update > /dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive \
         apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge \
         > "$1" 2>&1; } \
    || { tail -n 20 "$1"; echo "apt-get install failed (log: $1)"; return 1; }
  echo "   installed: $(srun --version)"
}

# slurm_start_munge DIR: uses a munged that answers, else starts one as
# Debian's unit does. Sets slurm_started_munge=1 when this (or an earlier
# run that left DIR/munged.started) started it, so slurm_stop_munge stops
# it; a munged that ran before is left alone. Returns 1 on failure.
slurm_started_munge=0
slurm_start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    if [ -f "$1/munged.started" ]; then
      slurm_started_munge=1
      echo "   munged already running (started by an earlier check)"
    else
      echo "   munged already running (left running at the end)"
    fi
    return 0
  fi
  install -d -o munge -g munge -m 0755 /run/munge
  if [ ! -s /etc/munge/munge.key ]; then
    runuser -u munge -- mungekey --create || { echo "could not create /etc/munge/munge.key"; return 1; }
  fi
  runuser -u munge -- /usr/sbin/munged || { echo "munged did not start (see /var/log/munge/munged.log)"; return 1; }
  slurm_started_munge=1
  touch "$1/munged.started"
  for _ in $(seq 25); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.2; done
  munge -n | unmunge >/dev/null 2>&1 || { echo "munge does not work (see /var/log/munge/munged.log)"; return 1; }
  echo "   started munged (pid $(cat /run/munge/munged.pid 2>/dev/null))"
}

slurm_stop_munge() {
  [ "$slurm_started_munge" = 1 ] || return 0
  munged --stop >/dev/null 2>&1 && echo "   stopped munged"
  slurm_started_munge=0
  rm -f "$1/munged.started"
}

# slurm_write_conf CONF DIR CLUSTER CONTROLLER CONTROLLER_ADDR CPUS NODE=ADDR...
# A slurm.conf for the nodes given, CPUS each, in one partition "debug" that
# lets 4 tasks share a CPU: no cgroups (proctrack/linuxproc, task/none), no
# accounting, MpiDefault=pmix, and per node (%n) its own spool, pid file, log
# and TmpFS (where the pmix plugin makes its per-job directories, so that
# nodes sharing one /tmp do not collide). Clears DIR's old state.
slurm_write_conf() {
  local conf=$1 dir=$2 cluster=$3 ctl=$4 ctl_addr=$5 cpus=$6 spec names=""
  shift 6
  rm -rf "$dir/state" "$dir/spool" "$dir/tmpfs"
  mkdir -p "$(dirname "$conf")" "$dir/log" "$dir/state"
  {
    echo "# Written by packaging/slurm-lib.sh for a throw-away check cluster."
    echo "ClusterName=$cluster"
    echo "SlurmctldHost=$ctl($ctl_addr)"
    cat <<EOF
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
TmpFS=$dir/tmpfs/%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.%n.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=pmix
ReturnToService=2
SlurmdTimeout=300
InactiveLimit=0
KillWait=5
EOF
    for spec in "$@"; do
      echo "NodeName=${spec%%=*} NodeAddr=${spec#*=} CPUs=$cpus State=UNKNOWN"
      names+="${names:+,}${spec%%=*}"
      mkdir -p "$dir/spool/${spec%%=*}" "$dir/tmpfs/${spec%%=*}"
    done
    echo "PartitionName=debug Nodes=$names Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4"
  } > "$conf"
}

# slurm_wait_idle SECONDS NODE...: until sinfo shows every NODE idle.
slurm_wait_idle() {
  local limit=$1 n ok
  shift
  for _ in $(seq $((limit * 2))); do
    ok=1
    for n in "$@"; do [ "$(sinfo -h -n "$n" -o %T 2>/dev/null)" = idle ] || ok=0; done
    [ $ok = 1 ] && return 0
    sleep 0.5
  done
  return 1
}

# slurm_cancel_all: cancels every job of root, if slurmctld answers.
slurm_cancel_all() {
  timeout 10 scancel --full --user=root >/dev/null 2>&1
  sleep 1
}
