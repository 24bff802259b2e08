#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for trying the SLURM launcher and for the tests marked `slurm`.
#
#   scripts/slurm-local.sh start    install slurm-wlm and munge with apt if missing, start munged, slurmctld
#                                   and slurmd on loopback, wait until the node takes jobs
#   scripts/slurm-local.sh status   say whether it is up (exit 0) or not (exit 1)
#   scripts/slurm-local.sh stop     stop the daemons it started (by their pid files), and nothing else
#   scripts/slurm-local.sh env      print the line that points SLURM's commands at this cluster
#
# Then: eval "$(scripts/slurm-local.sh env)"; sbatch/squeue/scancel and `hydra/launcher=slurm` use it.
# Everything (config, munge key and socket, state, logs) lives in $BNLAB_SLURM_DIR (default
# /tmp/bnlab-slurm-local); nothing under /etc is changed, so a real cluster's config is left alone.
# Written for Debian's Slurm 22.05 run as root in a container: no systemd and no cgroup delegation, hence
# proctrack/linuxproc, task/none and the cgroup.conf below. No accounting database: `sacct` does not work
# here, so submitit sees job states through its result files.
set -euo pipefail

DIR="${BNLAB_SLURM_DIR:-/tmp/bnlab-slurm-local}"
CTLD_PORT="${BNLAB_SLURM_CTLD_PORT:-16817}"
SLURMD_PORT="${BNLAB_SLURM_SLURMD_PORT:-16818}"
NODE="$(hostname -s)"
CONF="$DIR/slurm.conf"

say() { echo "slurm-local: $*" >&2; }

install_packages() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null && return
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    say "slurm-wlm and munge are not installed, and installing them needs root and apt-get (Debian/Ubuntu)."
    say "Install them (apt-get install slurm-wlm munge), then run this again."
    exit 1
  fi
  say "installing slurm-wlm and munge with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq slurm-wlm munge >/dev/null
}

write_config() {
  mkdir -p "$DIR"/{munge,state,spool,log}
  chmod 700 "$DIR/munge"
  [ -s "$DIR/munge/munge.key" ] || head -c 1024 /dev/urandom > "$DIR/munge/munge.key"
  chmod 400 "$DIR/munge/munge.key"
  local cpus mem_mb
  cpus="$(nproc)"
  mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))
  cat > "$CONF" <<EOF
# Written by scripts/slurm-local.sh: a one-node cluster on loopback.
ClusterName=bnlab-local
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
ReturnToService=2
JobRequeue=1
KillWait=10
MinJobAge=600
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=local Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
  # Slurm reads cgroup.conf beside slurm.conf; 22.05 has no CgroupPlugin=disabled, and v1 with systemd
  # ignored is what starts in a container without a cgroup hierarchy of its own.
  printf 'CgroupPlugin=cgroup/v1\nIgnoreSystemd=yes\n' > "$DIR/cgroup.conf"
}

# pid from a pid file, when that process is alive and is the named daemon (a stale file names no one)
daemon_pid() {
  local file="$1" name="$2" pid
  [ -s "$file" ] || return 1
  pid="$(cat "$file")"
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] && echo "$pid"
}

node_ready() {
  SLURM_CONF="$CONF" sinfo -h -N -o '%t' 2>/dev/null | grep -Eq '^(idle|mix|alloc)'
}

start() {
  if daemon_pid "$DIR/slurmctld.pid" slurmctld >/dev/null && node_ready; then
    say "already up ($DIR)"; return
  fi
  install_packages
  write_config
  export SLURM_CONF="$CONF"
  if ! daemon_pid "$DIR/munge/munged.pid" munged >/dev/null; then
    munged --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
      --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/seed"
  fi
  daemon_pid "$DIR/slurmctld.pid" slurmctld >/dev/null || slurmctld -f "$CONF"
  daemon_pid "$DIR/slurmd.pid" slurmd >/dev/null || slurmd -f "$CONF" -N "$NODE"
  for _ in $(seq 60); do
    if node_ready; then
      say "up: node $NODE, partition local ($DIR)"; return
    fi
    sleep 1
  done
  say "the node did not come up within 60 s; logs in $DIR/log:"
  tail -n 20 "$DIR"/log/*.log >&2 || true
  exit 1
}

stop() {
  local pids=() pid name file
  for pair in slurmd:"$DIR/slurmd.pid" slurmctld:"$DIR/slurmctld.pid" munged:"$DIR/munge/munged.pid"; do
    name="${pair%%:*}"; file="${pair#*:}"
    if pid="$(daemon_pid "$file" "$name")"; then
      kill "$pid" && pids+=("$pid")
    fi
  done
  for _ in $(seq 30); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.5
  done
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  say "stopped ${#pids[@]} daemons"
}

status() {
  if daemon_pid "$DIR/slurmctld.pid" slurmctld >/dev/null && node_ready; then
    say "up ($DIR)"; SLURM_CONF="$CONF" sinfo >&2; return 0
  fi
  say "not running ($DIR)"; return 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
