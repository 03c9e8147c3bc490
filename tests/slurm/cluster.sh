#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, with real accounting (slurmdbd + MariaDB), for testing the workflow
# under snakemake's SLURM executor plugin. Needs root and apt (Debian 12: slurm-wlm 22.05, munge, mariadb).
#
#   bash tests/slurm/cluster.sh up      # install (if missing), configure, start; waits until the node is idle
#   eval "$(bash tests/slurm/cluster.sh env)"   # SLURM_CONF for sbatch/squeue/sacct in this shell
#   bash tests/slurm/cluster.sh status
#   bash tests/slurm/cluster.sh down    # cancel jobs, stop every daemon it started, remove the state dir
#
# Everything (configs, munge key and socket, MariaDB data, spool, logs, pid files) lives under $LPNTK_SLURM_STATE
# (default /tmp/lpntk-slurm); no system service is started. The one thing outside it is a symlink
# /etc/slurm/slurm.conf -> $LPNTK_SLURM_STATE/etc/slurm.conf, made only if that path is free and removed by `down`:
# the client commands find the cluster at the default path, as on a real cluster. (SLURM_CONF alone is not enough:
# snakemake-executor-plugin-slurm-jobstep strips every SLURM_* variable but the job ids from the environment of
# the `srun` it runs inside each job, so that srun could only find a config at the default path.)
# Daemons are started by this script in the foreground of their own session and stopped by the pids it
# recorded. Ports are picked free at `up` time. Both commands are idempotent.
set -euo pipefail

STATE="${LPNTK_SLURM_STATE:-/tmp/lpntk-slurm}"
CLUSTER="${LPNTK_SLURM_CLUSTER:-lpntk}"
ACCOUNT="${LPNTK_SLURM_ACCOUNT:-lpntk}"
PARTITION="${LPNTK_SLURM_PARTITION:-debug}"
NODE="$(hostname -s)"
CONF="$STATE/etc/slurm.conf"
DEFAULT_CONF=/etc/slurm/slurm.conf # Debian's compiled-in default (scontrol show config: SLURM_CONF)
PIDS="$STATE/pids"
PACKAGES=(slurm-wlm slurm-client slurmdbd munge mariadb-server)
export SLURM_CONF="$CONF"

log() { printf '[cluster %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

# -- install -----------------------------------------------------------------------------------------------
install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "need root to install ${missing[*]}"
    log "installing ${missing[*]}"
    # The packages' maintainer scripts would start munge, mariadb, slurmctld, ... with the system-wide configs:
    # a policy-rc.d that denies every start keeps them quiet (removed again below, only if we created it).
    local policy=/usr/sbin/policy-rc.d ours=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && ours=1
    fi
    local lists=(/var/lib/apt/lists/*_Packages)
    [ -e "${lists[0]}" ] || apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 ||
        {
            [ $ours -eq 1 ] && rm -f "$policy"
            die "apt-get install failed"
        }
    [ $ours -eq 1 ] && rm -f "$policy"
    return 0
}

# -- helpers -----------------------------------------------------------------------------------------------
free_ports() { # N distinct TCP ports on 127.0.0.1 that nobody listens on now
    python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
}

alive() { [ -s "$PIDS/$1.pid" ] && kill -0 "$(cat "$PIDS/$1.pid")" 2>/dev/null; }

# start NAME LOGFILE CMD...: run CMD in its own session, record its pid (the daemon's own pid: CMD execs it).
start() {
    local name=$1 logfile=$2
    shift 2
    setsid "$@" </dev/null >>"$logfile" 2>&1 &
    echo $! >"$PIDS/$name.pid"
}

wait_for() { # wait_for SECONDS DESCRIPTION CMD...
    local secs=$1 what=$2 i
    shift 2
    for ((i = 0; i < secs * 2; i++)); do
        timeout 10 "$@" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    die "timed out after ${secs}s waiting for $what (logs: $STATE/log)"
}

stop_pid() { # stop_pid NAME: TERM, wait up to 20 s, then KILL
    local name=$1 pid i
    [ -s "$PIDS/$name.pid" ] || return 0
    pid=$(cat "$PIDS/$name.pid")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 40; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name ($pid) ignored SIGTERM; SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$PIDS/$name.pid"
}

node_idle() { [ "$(sinfo -h -N -n "$NODE" -o %t 2>/dev/null)" = "idle" ]; }

# -- configuration -----------------------------------------------------------------------------------------
write_configs() {
    local ctld_port=$1 slurmd_port=$2 dbd_port=$3 db_port=$4 db_pass=$5
    local node_line
    # The node's real hardware, as slurmd itself detects it (CPUs, sockets/cores/threads, RealMemory in MiB).
    # Declaring more than this drains the node ("Low RealMemory"); declaring it as detected keeps it honest.
    node_line=$(slurmd -C | head -1)
    [[ $node_line == NodeName=* ]] || die "slurmd -C printed '$node_line'"
    node_line=${node_line#NodeName=* }

    cat >"$CONF" <<EOF
# One-node test cluster written by tests/slurm/cluster.sh (state under $STATE).
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$STATE/munge/run/munge.socket.2
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups in a container: track processes through /proc, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5
MpiDefault=none
SwitchType=switch/none
# A node that went DOWN (slurmd restarted, not responding) comes back as soon as it registers again.
ReturnToService=2
MinJobAge=300
KillWait=5
InactiveLimit=0
MailProg=/bin/true
# Real accounting: sacct answers from slurmdbd (the plugin polls job states with sacct).
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$dbd_port
# With auth/munge, the connection to slurmdbd authenticates through the munge socket named here (AuthInfo's
# socket= is not used for it): without this line sacct/sacctmgr look for /run/munge/munge.socket.2.
AccountingStoragePass=$STATE/munge/run/munge.socket.2
AccountingStorageEnforce=associations
AccountingStoreFlags=job_comment
JobCompType=jobcomp/none
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE $node_line State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

    cat >"$STATE/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$STATE/munge/run/munge.socket.2
DbdHost=$NODE
DbdAddr=127.0.0.1
DbdPort=$dbd_port
SlurmUser=slurm
DebugLevel=info
LogFile=$STATE/log/slurmdbd.log
PidFile=$STATE/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$db_port
StorageUser=slurm
StoragePass=$db_pass
StorageLoc=slurm_acct_db
EOF
    chown slurm:slurm "$STATE/etc/slurmdbd.conf"
    chmod 600 "$STATE/etc/slurmdbd.conf"
    chmod 644 "$CONF"
}

# -- up / down ---------------------------------------------------------------------------------------------
up() {
    [ "$(id -u)" -eq 0 ] || die "run as root"
    if [ -f "$CONF" ] && our_link && alive slurmctld && alive slurmd && alive slurmdbd && node_idle; then
        log "already up ($STATE)"
        return 0
    fi
    [ -e "$STATE" ] && {
        log "stale state in $STATE: tearing down first"
        down
    }
    install_packages
    if [ -e "$DEFAULT_CONF" ] || [ -L "$DEFAULT_CONF" ]; then
        die "$DEFAULT_CONF exists and is not ours: this machine already has a SLURM configuration"
    fi
    local t0=$SECONDS
    # a failed start shows the daemons' last words and leaves nothing running behind
    trap 'rc=$?; if [ $rc -ne 0 ]; then log "up failed (exit $rc)"; tail -n 5 "$STATE"/log/* 2>/dev/null; down; fi' EXIT

    mkdir -p "$STATE"/{etc,pids,run,log,slurmctld,slurmd,munge/{etc,run,log,lib},mysql/{data,run}}
    chmod 755 "$STATE" "$STATE"/{etc,run,log}
    chown slurm:slurm "$STATE/slurmctld" "$STATE/run" "$STATE/log"
    chown -R munge:munge "$STATE/munge"
    chmod 711 "$STATE/munge"
    chmod 700 "$STATE/munge/etc" "$STATE/munge/lib" "$STATE/munge/log"
    chmod 755 "$STATE/munge/run"
    chown -R mysql:mysql "$STATE/mysql"

    local ctld_port slurmd_port dbd_port db_port db_pass
    read -r ctld_port slurmd_port dbd_port db_port <<<"$(free_ports 4)"
    db_pass=$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
    write_configs "$ctld_port" "$slurmd_port" "$dbd_port" "$db_port" "$db_pass"
    mkdir -p "$(dirname "$DEFAULT_CONF")"
    ln -s "$CONF" "$DEFAULT_CONF"

    # munge: a fresh key for this cluster only, daemon as the munge user, socket in the state dir.
    log "munged"
    setpriv --reuid=munge --regid=munge --init-groups mungekey --create --keyfile="$STATE/munge/etc/munge.key"
    start munged "$STATE/log/munged.out" setpriv --reuid=munge --regid=munge --init-groups \
        munged --foreground --key-file="$STATE/munge/etc/munge.key" \
        --socket="$STATE/munge/run/munge.socket.2" --pid-file="$STATE/munge/run/munged.pid" \
        --log-file="$STATE/munge/log/munged.log" --seed-file="$STATE/munge/lib/munged.seed"
    wait_for 20 munged bash -c "munge -n --socket='$STATE/munge/run/munge.socket.2' |
        unmunge --socket='$STATE/munge/run/munge.socket.2'"

    # MariaDB: a private instance (own datadir, socket, TCP port on 127.0.0.1), not the system one.
    log "mariadb"
    mariadb-install-db --no-defaults --user=mysql --datadir="$STATE/mysql/data" \
        --auth-root-authentication-method=socket --skip-test-db >"$STATE/log/mariadb-install.log" 2>&1 ||
        die "mariadb-install-db failed (see $STATE/log/mariadb-install.log)"
    start mariadbd "$STATE/log/mariadbd.out" mariadbd --no-defaults --user=mysql \
        --datadir="$STATE/mysql/data" --socket="$STATE/mysql/run/mysqld.sock" \
        --pid-file="$STATE/mysql/run/mysqld.pid" --port="$db_port" --bind-address=127.0.0.1 \
        --skip-name-resolve --log-error="$STATE/log/mariadbd.log" \
        --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900 --max-connections=50
    wait_for 60 mariadb mariadb-admin --no-defaults --socket="$STATE/mysql/run/mysqld.sock" ping
    mariadb --no-defaults --socket="$STATE/mysql/run/mysqld.sock" -u root <<EOF
CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$db_pass';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
EOF

    log "slurmdbd"
    start slurmdbd "$STATE/log/slurmdbd.out" slurmdbd -D
    wait_for 60 slurmdbd sacctmgr -n list cluster
    # Accounting objects: the cluster, an account, root (the submitting user here) in it by default.
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
    sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description="lpntk test" Organization=lpntk >/dev/null
    sacctmgr -i add user root Account="$ACCOUNT" DefaultAccount="$ACCOUNT" Cluster="$CLUSTER" >/dev/null

    log "slurmctld"
    start slurmctld "$STATE/log/slurmctld.out" slurmctld -D -i
    wait_for 30 slurmctld scontrol ping
    log "slurmd"
    start slurmd "$STATE/log/slurmd.out" slurmd -D -N "$NODE"
    wait_for 60 "node $NODE idle" bash -c "[ \"\$(sinfo -h -N -n '$NODE' -o %t)\" = idle ]"
    log "up in $((SECONDS - t0))s: $(sinfo -h -N -o '%N %P %t cpus=%c mem=%mMB')"
    trap - EXIT
}

our_link() { [ -L "$DEFAULT_CONF" ] && [ "$(readlink "$DEFAULT_CONF")" = "$CONF" ]; }

down() {
    our_link && rm -f "$DEFAULT_CONF"
    [ -e "$STATE" ] || {
        log "nothing to tear down ($STATE absent)"
        return 0
    }
    if [ -f "$CONF" ] && alive slurmctld; then
        # Cancel every job of this cluster and let slurmd clean them up before it stops, so that no slurmstepd
        # or job process outlives the cluster.
        scancel --full --quiet --user=root 2>/dev/null || true
        local i
        for ((i = 0; i < 40; i++)); do
            [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
            sleep 0.5
        done
        if alive slurmd; then
            local pids
            pids=$(scontrol listpids 2>/dev/null | awk 'NR > 1 && $1 ~ /^[0-9]+$/ {print $1}') || true
            [ -n "$pids" ] && {
                log "killing leftover job processes: $pids"
                kill -KILL $pids 2>/dev/null || true
            }
        fi
    fi
    local d
    for d in slurmd slurmctld slurmdbd mariadbd munged; do stop_pid "$d"; done
    rm -rf "$STATE"
    log "down"
}

status() {
    local d
    for d in munged mariadbd slurmdbd slurmctld slurmd; do
        if alive "$d"; then echo "$d: running ($(cat "$PIDS/$d.pid"))"; else echo "$d: stopped"; fi
    done
    [ -f "$CONF" ] && alive slurmctld && sinfo -N -l || true
}

case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
env) echo "export SLURM_CONF=$CONF" ;;
*)
    echo "usage: $0 up|down|status|env" >&2
    exit 2
    ;;
esac
