#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, to try (and test) the SLURM launcher without a real cluster.
#
#   scripts/local_slurm.sh install   # Debian packages: munge, slurmctld, slurmd, slurm-client, slurmdbd, mariadb-server
#   scripts/local_slurm.sh start     # munged, a private MariaDB, slurmdbd, slurmctld, slurmd; waits until the node is idle
#   scripts/local_slurm.sh status    # the partition and the jobs
#   scripts/local_slurm.sh stop      # cancels every job of this cluster, stops what `start` started
#
# The cluster: node `localhost` (this machine's CPUs and memory, no GPU), partition `cpu` (the default).
# slurmdbd with MariaDB gives `sacct`, which submitit polls to see that a job ended without a result (a
# cancelled or timed-out job); without it the submitting process would wait forever.
# Needs root (daemons run as root: no cgroups, no per-user accounts). It writes /etc/slurm/slurm.conf and
# slurmdbd.conf (refusing to replace files it did not write), keeps state in /var/spool/deepforcing-slurm,
# /var/lib/deepforcing-slurm (the database) and /run/deepforcing-slurm, logs in /var/log/slurm. Meant for a
# test machine or container: it is not a configuration for a shared cluster.
#
# Exit status: 0 done; 1 failed (the message and the log to read are printed); 3 cannot run here (not
# root, or not installed): tests skip on 3 with the printed reason.
set -euo pipefail

RUN_DIR=/run/deepforcing-slurm
DB_DIR=/var/lib/deepforcing-slurm/mysql
SPOOL=/var/spool/deepforcing-slurm
DB_SOCKET=$RUN_DIR/mysqld.sock
CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
MARK="# written by deepforcing scripts/local_slurm.sh"
CLUSTER=deepforcing
PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)
BINARIES=(munged munge slurmctld slurmd slurmdbd sbatch srun sacct sacctmgr scontrol sinfo mariadbd mariadb-install-db
          mariadb-admin)
WAIT_S=${LOCAL_SLURM_WAIT_S:-60}

say() { echo "local_slurm: $*" >&2; }
die() { say "$*"; exit 1; }
cannot() { say "$*"; exit 3; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo -n "$@"
  else return 99
  fi
}

missing_binaries() {
  local b out=()
  for b in "${BINARIES[@]}"; do
    command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] || out+=("$b")
  done
  echo "${out[*]:-}"
}

cmd_install() {
  local missing
  missing=$(missing_binaries)
  if [ -z "$missing" ]; then say "installed"; return 0; fi
  command -v apt-get >/dev/null 2>&1 || cannot "cannot install SLURM: no apt-get (missing: $missing)"
  as_root true 2>/dev/null || cannot "cannot install SLURM: not root and no password-less sudo (missing: $missing)"
  say "installing ${PACKAGES[*]} (missing: $missing)"
  # keep the packages' services from starting with their default configuration (start configures them)
  local policy=/usr/sbin/policy-rc.d added=0
  if [ ! -e "$policy" ]; then
    as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy" && added=1
  fi
  local rc=0
  { as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
      && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"; } \
    >/tmp/local_slurm_install.log 2>&1 || rc=$?
  [ "$added" -eq 1 ] && as_root rm -f "$policy"
  [ "$rc" -eq 0 ] || die "apt-get failed (exit $rc); see /tmp/local_slurm_install.log"
  missing=$(missing_binaries)
  [ -z "$missing" ] || die "still missing after apt-get: $missing"
  say "installed"
}

# wait_for SECONDS DESCRIPTION COMMAND...: poll until COMMAND succeeds
wait_for() {
  local secs=$1 what=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep 0.2
  done
}

ours() {  # a config file absent or written by this script
  [ ! -e "$1" ] || head -n 1 "$1" | grep -qxF "$MARK"
}

started() { echo "$1" >> "$RUN_DIR/started"; }

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }  # alive PIDFILE (clients wait ~10 s on a dead daemon)

node_state() { sinfo -h -N -n localhost -o %t 2>/dev/null | head -n 1; }

write_configs() {
  local hw cpus mem
  # slurmd drains a node that claims more than it has: its own measure, less 1 GiB of memory for the system
  hw=$(slurmd -C)
  cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$hw")
  mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
  mem=$(( mem > 2048 ? mem - 1024 : mem ))
  mkdir -p "$CONF_DIR"
  cat > "$CONF_DIR/slurm.conf" <<EOF
$MARK
# One-node test cluster on localhost (no cgroups, daemons and jobs as root).
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# scancel: SIGTERM, then SIGKILL after KillWait seconds (submitit's job wrapper ignores SIGTERM; Slurm's default is 30)
KillWait=2
MinJobAge=300
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/d
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=cpu Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
  cat > "$CONF_DIR/slurmdbd.conf" <<EOF
$MARK
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$RUN_DIR/slurmdbd.pid
LogFile=$LOG_DIR/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$CONF_DIR/slurmdbd.conf"
}

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi  # a munged already answers
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null 2>&1; then mungekey --create --keyfile=/etc/munge/munge.key --force >/dev/null
    else dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
  fi
  mkdir -p /run/munge /var/lib/munge /var/log/munge
  chown munge:munge /etc/munge /etc/munge/munge.key /run/munge /var/lib/munge /var/log/munge
  chmod 700 /etc/munge; chmod 400 /etc/munge/munge.key; chmod 755 /run/munge
  runuser -u munge -- /usr/sbin/munged || die "munged did not start; see /var/log/munge/munged.log"
  started munged
  wait_for "$WAIT_S" munge sh -c 'munge -n | unmunge' || die "munge does not answer; see /var/log/munge/munged.log"
}

db() { mariadb --no-defaults --socket="$DB_SOCKET" -u root "$@"; }

start_db() {
  alive "$RUN_DIR/mariadb.pid" && return 0
  mkdir -p "$DB_DIR"
  chown mysql:mysql "$RUN_DIR" "$DB_DIR"
  if [ ! -d "$DB_DIR/mysql" ]; then
    mariadb-install-db --no-defaults --user=mysql --datadir="$DB_DIR" --auth-root-authentication-method=socket \
      --skip-test-db >"$LOG_DIR/mariadb-install.log" 2>&1 \
      || die "mariadb-install-db failed; see $LOG_DIR/mariadb-install.log"
  fi
  # private instance: its own data folder and socket, no TCP port
  nohup mariadbd --no-defaults --user=mysql --datadir="$DB_DIR" --socket="$DB_SOCKET" --skip-networking \
    --pid-file="$RUN_DIR/mariadb.pid" --log-error="$LOG_DIR/mariadb.log" --innodb-buffer-pool-size=64M \
    >/dev/null 2>&1 &
  started mariadb
  wait_for "$WAIT_S" mariadb mariadb-admin --no-defaults --socket="$DB_SOCKET" -u root ping \
    || die "MariaDB did not start; see $LOG_DIR/mariadb.log"
}

start_slurmdbd() {
  alive "$RUN_DIR/slurmdbd.pid" && return 0
  # slurmdbd reaches the private database through the client library's socket variable
  MYSQL_UNIX_PORT="$DB_SOCKET" slurmdbd || die "slurmdbd did not start; see $LOG_DIR/slurmdbd.log"
  started slurmdbd
  wait_for "$WAIT_S" slurmdbd sacctmgr -n list cluster || die "slurmdbd does not answer; see $LOG_DIR/slurmdbd.log"
  sacctmgr -n list cluster format=cluster%40 | grep -qw "$CLUSTER" \
    || sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr could not add cluster $CLUSTER"
}

cmd_start() {
  [ "$(id -u)" -eq 0 ] || cannot "cannot start SLURM: the one-node cluster needs root (running as $(id -un))"
  local missing
  missing=$(missing_binaries)
  [ -z "$missing" ] || cannot "cannot start SLURM: not installed (missing: $missing); run: scripts/local_slurm.sh install"
  for f in "$CONF_DIR/slurm.conf" "$CONF_DIR/slurmdbd.conf"; do
    ours "$f" || die "$f was not written by this script; it will not replace a real cluster's configuration"
  done
  mkdir -p "$RUN_DIR" "$LOG_DIR" "$SPOOL/ctld" "$SPOOL/d"
  if alive "$RUN_DIR/slurmctld.pid" && alive "$RUN_DIR/slurmd.pid" && [[ "$(node_state)" =~ ^(idle|mix|alloc)$ ]]; then
    say "already running: $(sinfo -h -o '%P %a %D %t %N' | head -n 1)"; return 0
  fi
  write_configs
  start_munge
  start_db
  start_slurmdbd
  if ! alive "$RUN_DIR/slurmctld.pid"; then
    slurmctld || die "slurmctld did not start; see $LOG_DIR/slurmctld.log"
    started slurmctld
    wait_for "$WAIT_S" slurmctld sh -c 'scontrol ping | grep -q "is UP"' \
      || die "slurmctld does not answer; see $LOG_DIR/slurmctld.log"
  fi
  if ! alive "$RUN_DIR/slurmd.pid"; then
    slurmd -N localhost || die "slurmd did not start; see $LOG_DIR/slurmd.log"
    started slurmd
  fi
  local end=$((SECONDS + WAIT_S)) state=""
  while :; do
    state=$(node_state)
    case "$state" in
      idle|mix|alloc) break ;;
      drain*|down*) scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true ;;
    esac
    [ "$SECONDS" -lt "$end" ] || die "node localhost is '${state:-unknown}' after ${WAIT_S}s; see $LOG_DIR/slurmd.log"
    sleep 0.2
  done
  say "up: $(sinfo -h -o '%P %a %D %t %N' | head -n 1)"
}

stop_pids() {  # stop_pids PIDFILE...: SIGTERM to each, wait for all; SIGKILL what is left after 20 s
  local f pids=() pid
  for f in "$@"; do
    [ -s "$f" ] && pid=$(cat "$f") && kill "$pid" 2>/dev/null && pids+=("$pid")
  done
  for _ in $(seq 200); do
    local left=()
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && left+=("$pid"); done
    [ "${#left[@]}" -eq 0 ] && return 0
    pids=("${left[@]}")
    sleep 0.1
  done
  say "still running 20 s after SIGTERM: ${pids[*]}: SIGKILL"
  kill -9 "${pids[@]}" 2>/dev/null || true
}

cmd_stop() {
  [ "$(id -u)" -eq 0 ] || cannot "cannot stop SLURM: needs root"
  [ -s "$RUN_DIR/started" ] || { say "nothing to stop"; return 0; }
  local s
  s=$(cat "$RUN_DIR/started")
  if grep -qx slurmctld <<<"$s"; then
    scancel --full --quiet --partition=cpu 2>/dev/null || true
    local end=$((SECONDS + 30))
    while [ -n "$(squeue -h -o %A 2>/dev/null)" ] && [ "$SECONDS" -lt "$end" ]; do sleep 0.5; done
  fi
  pidfile() { grep -qx "$1" <<<"$s" && echo "$2" || true; }
  # in order: the daemons, then the accounting daemon they report to, then the database and munge
  stop_pids $(pidfile slurmd "$RUN_DIR/slurmd.pid") $(pidfile slurmctld "$RUN_DIR/slurmctld.pid")
  stop_pids $(pidfile slurmdbd "$RUN_DIR/slurmdbd.pid")
  stop_pids $(pidfile mariadb "$RUN_DIR/mariadb.pid") $(pidfile munged /run/munge/munged.pid)
  rm -f "$RUN_DIR/started"
  say "stopped: $(tr '\n' ' ' <<<"$s")"
}

cmd_status() {
  sinfo -o '%P %a %D %t %N %c %m' && squeue
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 install|start|status|stop" >&2; exit 2 ;;
esac
