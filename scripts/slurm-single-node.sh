#!/usr/bin/env bash
# A real, single-node SLURM on this machine, for testing the SLURM profile (tests/workflow/test_slurm.py).
#
#   sudo bash scripts/slurm-single-node.sh install  # apt-get install slurmctld slurmd slurm-client munge
#   sudo bash scripts/slurm-single-node.sh start    # install if missing, start munged, slurmctld, slurmd
#   sudo bash scripts/slurm-single-node.sh status   # exit 0 when the node is up
#   sudo bash scripts/slurm-single-node.sh stop     # stop the daemons this script started, by their PIDs
#
# Root only, no systemd: the daemons are started by hand. The slurm.conf written here has no accounting
# (AccountingStorageType=accounting_storage/none) and keeps finished jobs visible to `squeue` for an hour
# (MinJobAge=3600), so Snakemake must query job states with `--slurm-status-command squeue`: `sacct`
# never reports a job as finished without a slurmdbd, and Snakemake then waits forever. Running slurmdbd
# would need MariaDB as well; squeue + MinJobAge is the simpler setup and tests the same submission path.
#
# The script never touches a SLURM it did not configure: it refuses to start when /etc/slurm/slurm.conf
# holds anything without its marker line, and `stop` only kills the PIDs in its own PID files.
set -euo pipefail

MARKER="# written by rankclip scripts/slurm-single-node.sh"
CONF=/etc/slurm/slurm.conf
RUN=/run/rankclip-slurm
LOGDIR=/var/log/slurm
STATE=/var/lib/slurm
PARTITION=${SLURM_TEST_PARTITION:-debug}
PACKAGES=(slurmctld slurmd slurm-client munge)

die() {
  echo "slurm-single-node: $*" >&2
  exit 1
}

node_state() {
  sinfo --noheader --nodes "$NODE" --format %T 2>/dev/null | head -n 1
}

node_up() { # the node takes jobs (idle) or runs some
  case "$(node_state)" in
    idle | mixed | allocated | completing) return 0 ;;
    *) return 1 ;;
  esac
}

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
    && command -v munged >/dev/null; then
    return
  fi
  [ "$(id -u)" = 0 ] || die "run as root to install ${PACKAGES[*]} with apt-get"
  command -v apt-get >/dev/null || die "SLURM is not installed and apt-get is missing: install ${PACKAGES[*]}"
  echo "installing ${PACKAGES[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${PACKAGES[@]}" >/dev/null
}

write_conf() {
  # An empty file configures nothing (some images ship one): it is replaced, and removed by `stop`.
  if [ -s "$CONF" ] && ! grep -qF "$MARKER" "$CONF"; then
    die "$CONF exists and was not written by this script; not touching a real SLURM configuration"
  fi
  # The node as slurmd sees it (CPUs, sockets, cores), with 10% of the memory left to the OS and Snakemake.
  local node_line memory
  node_line=$(slurmd -C | head -n 1)
  memory=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node_line")
  node_line=${node_line/RealMemory=$memory/RealMemory=$((memory * 9 / 10))}
  mkdir -p /etc/slurm
  cat >"$CONF" <<EOF
$MARKER
ClusterName=rankclip-test
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=3600
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/backfill
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
$node_line NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

alive() { # alive PIDFILE: the PID in the file is a running process
  [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

start() {
  [ "$(id -u)" = 0 ] || die "run as root (it installs packages and starts daemons)"
  install_packages
  if alive "$RUN/slurmctld.pid" && alive "$RUN/slurmd.pid" && node_up; then
    echo "SLURM is already running: node $NODE $(node_state)"
    return
  fi
  write_conf
  mkdir -p "$RUN" "$LOGDIR" "$STATE/slurmctld" "$STATE/slurmd"

  # munge: the key Debian's package made, the daemon as the munge user.
  install -d -o munge -g munge -m 0755 /run/munge
  [ -s /etc/munge/munge.key ] || runuser -u munge -- mungekey --create --keyfile /etc/munge/munge.key
  if ! alive /run/munge/munged.pid; then
    runuser -u munge -- /usr/sbin/munged --pid-file /run/munge/munged.pid
    ln -sf /run/munge/munged.pid "$RUN/munged.pid"
  fi
  munge -n | unmunge >/dev/null || die "munge does not work (see /var/log/munge/munged.log)"

  # -c: start from a clean state (no jobs left over from an earlier run).
  alive "$RUN/slurmctld.pid" || slurmctld -c
  alive "$RUN/slurmd.pid" || slurmd

  for _ in $(seq 60); do
    state=$(node_state)
    if [ "$state" = idle ]; then
      echo "SLURM is up: node $NODE idle in partition $PARTITION ($CONF)"
      return
    fi
    if [[ "$state" == down* || "$state" == drain* || "$state" == inval* ]]; then
      scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
    fi
    sleep 1
  done
  tail -n 20 "$LOGDIR/slurmctld.log" "$LOGDIR/slurmd.log" >&2 || true
  die "node $NODE did not become idle within 60 s (state: ${state:-none}); logs above"
}

stop() {
  local name pidfile pid
  for name in slurmd slurmctld munged; do
    pidfile="$RUN/$name.pid"
    alive "$pidfile" || continue
    pid=$(cat "$pidfile")
    kill "$pid"
    for _ in $(seq 30); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
      kill -9 "$pid"
    fi
    echo "stopped $name (pid $pid)"
  done
  rm -f "$RUN/munged.pid"
  # Without a controller, every `scontrol` call (the SLURM plugin makes one whenever Snakemake starts)
  # waits ~10 s for it; with no slurm.conf it fails at once. So the configuration goes with the daemons.
  if [ -e "$CONF" ] && grep -qF "$MARKER" "$CONF"; then
    rm -f "$CONF"
  fi
}

status() {
  if alive "$RUN/slurmctld.pid" && alive "$RUN/slurmd.pid" && node_up; then
    echo "SLURM is up: node $NODE $(node_state)"
  else
    echo "SLURM is not running (node state: $(node_state))"
    return 1
  fi
}

NODE=$(hostname -s)
case "${1:-}" in
  install) install_packages ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: $0 install|start|stop|status" ;;
esac
