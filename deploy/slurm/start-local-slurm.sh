#!/usr/bin/env bash
# start-local-slurm.sh: a single-node SLURM cluster on this machine, for tests
# and for trying out `cluster: {type: slurm}` (dask-jobqueue's SLURMCluster).
# It is NOT a production setup: one node, no accounting, no cgroups, no
# resource enforcement, the daemons run straight from this script.
#
# Made for a Debian 12 (bookworm) machine where you are root, systemd or not
# (a CI runner or a container-like VM).  It
#   - installs slurmctld, slurmd, slurm-client and munge with apt-get when
#     they are missing;
#   - creates the munge key if there is none and starts munged;
#   - writes /etc/slurm/slurm.conf (a slurm.conf that is not ours is kept as
#     slurm.conf.bak-DATE): cluster "romandask-ci", this host as the only
#     node (what `slurmd -C` finds, RealMemory 90% of MemTotal), partition
#     "debug" (default, no time limit), cons_tres with CR_Core_Memory so that
#     several 1-core jobs share the node;
#   - starts slurmctld and slurmd, waits for the node to be idle, then runs
#     one `srun` and one `sbatch --wait` job as a check.
#
# Usage (as root):
#   deploy/slurm/start-local-slurm.sh          # start (does nothing if already up)
#   deploy/slurm/start-local-slurm.sh stop     # cancel jobs, stop what it started
#   deploy/slurm/start-local-slurm.sh restart
#
# Environment:
#   START_LOCAL_SLURM_TIMEOUT   seconds to wait for the node to be idle (60)
#   START_LOCAL_SLURM_CLUSTER   cluster name (romandask-ci)
#
# Then e.g.  sbatch --wrap 'hostname'  /  srun -n1 hostname  /  sinfo.
# Daemon logs: /var/log/slurm/slurmctld.log, /var/log/slurm/slurmd.log,
# /var/log/munge/munged.log.
set -euo pipefail

export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}"
export SLURM_CONF=/etc/slurm/slurm.conf
unset SLURM_JOB_ID SLURM_JOBID SQUEUE_FORMAT SINFO_FORMAT 2>/dev/null || true

CLUSTER="${START_LOCAL_SLURM_CLUSTER:-romandask-ci}"
TIMEOUT="${START_LOCAL_SLURM_TIMEOUT:-60}"
MARK="# romandask: single-node test cluster written by start-local-slurm.sh"
CONF_DIR=/etc/slurm
CTLD_STATE=/var/spool/slurmctld
SLURMD_SPOOL=/var/spool/slurmd
LOG_DIR=/var/log/slurm
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
MUNGE_KEY=/etc/munge/munge.key
MUNGE_RUN=/run/munge
MUNGE_PID=$MUNGE_RUN/munged.pid
# Which daemons this script started (so that `stop` leaves others alone).
RUN_DIR=/run/start-local-slurm

log() { echo "start-local-slurm: $*"; }
warn() { echo "start-local-slurm: warning: $*" >&2; }
die() { echo "start-local-slurm: error: $*" >&2; exit 1; }

show_logs() {
    local f
    for f in "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" /var/log/munge/munged.log; do
        if [[ -r $f ]]; then
            echo "----- last lines of $f -----" >&2
            tail -n 25 "$f" >&2 || true
        fi
    done
}

fail() { echo "start-local-slurm: error: $*" >&2; show_logs; exit 1; }

# pid from a pid file when that process is alive and is the named program
pid_of() {  # pidfile program
    local pid
    [[ -r $1 ]] || return 1
    pid=$(tr -dc '0-9' <"$1")
    [[ -n $pid ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$2" ]] || return 1
    echo "$pid"
}

stop_pid() {  # pid name
    local pid=$1 name=$2 i
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    warn "$name (pid $pid) still there after 15 s, sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
}

short_host() {
    local h
    h=$(hostname -s 2>/dev/null || true)
    [[ -n $h ]] || h=$(uname -n)
    echo "${h%%.*}"
}

HOST=$(short_host)

# ---------------------------------------------------------------- stop
do_stop() {
    local pid name pidfile
    mkdir -p "$RUN_DIR"
    if pid_of "$CTLD_PID" slurmctld >/dev/null && [[ -e $RUN_DIR/slurmctld ]]; then
        local jobs
        jobs=$(timeout 10 squeue -h -o %i 2>/dev/null || true)
        if [[ -n $jobs ]]; then
            log "cancelling jobs: $(tr '\n' ' ' <<<"$jobs")"
            # shellcheck disable=SC2086
            timeout 10 scancel $jobs 2>/dev/null || true
            sleep 2
        fi
    fi
    for name in slurmd slurmctld; do
        pidfile=$SLURMD_PID
        [[ $name == slurmctld ]] && pidfile=$CTLD_PID
        if pid=$(pid_of "$pidfile" "$name"); then
            if [[ -e $RUN_DIR/$name ]]; then
                stop_pid "$pid" "$name"
            else
                log "$name (pid $pid) was not started by this script, leaving it"
            fi
        else
            log "$name is not running"
        fi
        rm -f "$RUN_DIR/$name"
    done
    if pid=$(pid_of "$MUNGE_PID" munged); then
        if [[ -e $RUN_DIR/munged ]]; then
            stop_pid "$pid" munged
        else
            log "munged (pid $pid) was not started by this script, leaving it"
        fi
    fi
    rm -f "$RUN_DIR/munged"
    log "stopped"
}

# ---------------------------------------------------------------- install
install_packages() {
    local missing=() b
    for b in slurmctld slurmd sinfo squeue sbatch srun scontrol scancel munged munge unmunge; do
        command -v "$b" >/dev/null 2>&1 || missing+=("$b")
    done
    if ((${#missing[@]} == 0)); then
        log "slurm and munge are installed ($(slurmctld -V 2>/dev/null || echo '?'))"
        return 0
    fi
    log "missing: ${missing[*]}; installing slurmctld slurmd slurm-client munge"
    command -v apt-get >/dev/null 2>&1 || die "no apt-get here: install slurmctld, slurmd, slurm-client and munge yourself"
    # Keep the packages' maintainer scripts from starting the daemons (no
    # config yet, maybe no init system): the usual policy-rc.d "exit 101".
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 0755 "$policy"
        made_policy=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        slurmctld slurmd slurm-client munge
    if ((made_policy)); then
        rm -f "$policy"
        trap - EXIT
    fi
    for b in "${missing[@]}"; do
        command -v "$b" >/dev/null 2>&1 || die "$b still missing after the install"
    done
    log "installed $(slurmctld -V 2>/dev/null || echo slurm)"
}

# ---------------------------------------------------------------- munge
munge_ok() { timeout 5 munge -n 2>/dev/null | timeout 5 unmunge >/dev/null 2>&1; }

start_munge() {
    id munge >/dev/null 2>&1 || die "no munge user (is the munge package installed?)"
    install -d -o munge -g munge -m 0700 /etc/munge
    if [[ ! -s $MUNGE_KEY ]]; then
        log "creating $MUNGE_KEY"
        if ! mungekey --create --keyfile="$MUNGE_KEY" --force 2>/dev/null; then
            dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none
        fi
        chown munge:munge "$MUNGE_KEY"
        chmod 0400 "$MUNGE_KEY"
    else
        # munged refuses a key that others can read or that it does not own
        chown munge:munge "$MUNGE_KEY"
        chmod go-rwx "$MUNGE_KEY"
    fi
    install -d -o munge -g munge -m 0711 /var/lib/munge
    install -d -o munge -g munge -m 0700 /var/log/munge
    install -d -o munge -g munge -m 0755 "$MUNGE_RUN"

    if pid_of "$MUNGE_PID" munged >/dev/null && munge_ok; then
        log "munged is running"
        return 0
    fi
    if pid=$(pid_of "$MUNGE_PID" munged); then
        warn "munged (pid $pid) does not answer, restarting it"
        stop_pid "$pid" munged
    fi
    log "starting munged"
    mkdir -p "$RUN_DIR"
    # As the munge user, the way the Debian unit runs it; as root if not.
    if ! runuser -u munge -- /usr/sbin/munged 2>"$RUN_DIR/munged.err"; then
        warn "munged as user munge failed: $(cat "$RUN_DIR/munged.err"); trying as root"
        /usr/sbin/munged --force || fail "munged does not start"
    fi
    rm -f "$RUN_DIR/munged.err"
    touch "$RUN_DIR/munged"
    local i
    for ((i = 0; i < 50; i++)); do
        munge_ok && break
        sleep 0.2
    done
    munge_ok || fail "munge -n | unmunge fails"
    log "munge works (munge -n | unmunge)"
}

# ---------------------------------------------------------------- slurm.conf
slurm_user() {
    if id slurm >/dev/null 2>&1; then echo slurm; else echo root; fi
}

make_conf() {  # prints the slurm.conf text
    local cpuline cpus boards sockets cores threads cmem memtotal_kb mem defmem user kv key val
    cpuline=$(slurmd -C 2>/dev/null | head -n 1) || true
    [[ $cpuline == NodeName=* ]] || die "slurmd -C printed no node line: '$cpuline'"
    cpus=$(nproc) boards=1 sockets=1 cores=$cpus threads=1 cmem=0
    for kv in $cpuline; do
        key=${kv%%=*} val=${kv#*=}
        case $key in
            CPUs) cpus=$val ;;
            Boards) boards=$val ;;
            SocketsPerBoard) sockets=$val ;;
            CoresPerSocket) cores=$val ;;
            ThreadsPerCore) threads=$val ;;
            RealMemory) cmem=$val ;;
        esac
    done
    memtotal_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
    mem=$((memtotal_kb * 90 / 100 / 1024))
    if ((cmem > 0 && cmem < mem)); then mem=$cmem; fi
    ((mem > 0)) || die "cannot work out the memory size"
    defmem=$((mem / cpus))
    user=$(slurm_user)
    cat <<EOF
$MARK
# (deploy/slurm/start-local-slurm.sh in romandask).  One node, no accounting,
# no cgroups: for tests and trying things out, not for production.
# slurmd -C: $cpuline
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=$user
SlurmdUser=root
AuthType=auth/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$CTLD_STATE
SlurmdSpoolDir=$SLURMD_SPOOL
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info

# Nothing here needs systemd or cgroups.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none

SchedulerType=sched/backfill
# Start batch jobs when they are submitted (the default waits up to 3 s).
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# A job that asks for no memory gets this much per CPU (not the whole node),
# so that several 1-core jobs run at once.
DefMemPerCPU=$defmem
ReturnToService=2

# Short timeouts for a test machine.
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=30
MailProg=/bin/true
Waittime=0
MessageTimeout=10

NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus Boards=$boards SocketsPerBoard=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
}

CONF_CHANGED=0
write_conf() {
    local conf=$CONF_DIR/slurm.conf new
    mkdir -p "$CONF_DIR"
    new=$(make_conf)
    if [[ -f $conf ]] && [[ "$(cat "$conf")" == "$new" ]]; then
        log "$conf is up to date"
        return 0
    fi
    if [[ -f $conf ]] && ! grep -qxF "$MARK" "$conf"; then
        local bak
        bak="$conf.bak-$(date +%Y%m%d-%H%M%S)"
        cp -p "$conf" "$bak"
        log "kept the existing $conf as $bak"
    fi
    printf '%s\n' "$new" >"$conf.tmp"
    chmod 0644 "$conf.tmp"
    mv "$conf.tmp" "$conf"
    CONF_CHANGED=1
    log "wrote $conf ($(grep '^NodeName=' "$conf"))"
}

conf_is_ours() { [[ -f $CONF_DIR/slurm.conf ]] && grep -qxF "$MARK" "$CONF_DIR/slurm.conf"; }

# ---------------------------------------------------------------- slurm daemons
node_state() {  # idle, mixed, down, drained, ... with the flag characters (*~#!%$@^-) removed
    local s
    s=$(timeout 10 sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -n 1) || true
    echo "${s%%[*~#!%\$@^+-]*}"
}
node_state_raw() { timeout 10 sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -n 1 || true; }

healthy_state() {
    case $1 in idle | mixed | allocated | completing) return 0 ;; *) return 1 ;; esac
}

prepare_dirs() {
    local user
    user=$(slurm_user)
    install -d -o "$user" -g "$user" -m 0755 "$CTLD_STATE"
    install -d -o root -g root -m 0755 "$SLURMD_SPOOL"
    install -d -m 0755 "$LOG_DIR"
    chown "$user:$user" "$LOG_DIR"
    # (left from a run as another SlurmUser)
    chown -R "$user:$user" "$CTLD_STATE"
    if [[ -e $LOG_DIR/slurmctld.log ]]; then chown "$user:$user" "$LOG_DIR/slurmctld.log"; fi
    # slurmctld refuses a state directory from another cluster name
    if [[ -f $CTLD_STATE/clustername ]] && [[ "$(cat "$CTLD_STATE/clustername")" != "$CLUSTER" ]]; then
        local old
        old="$CTLD_STATE.old-$(date +%Y%m%d-%H%M%S)"
        log "$CTLD_STATE holds state of cluster '$(cat "$CTLD_STATE/clustername")', moving it to $old"
        mv "$CTLD_STATE" "$old"
        install -d -o "$user" -g "$user" -m 0755 "$CTLD_STATE"
    fi
}

start_daemon() {  # name pidfile
    local name=$1 pidfile=$2 pid i
    if pid=$(pid_of "$pidfile" "$name"); then
        log "$name is running (pid $pid)"
        return 0
    fi
    log "starting $name"
    mkdir -p "$RUN_DIR"
    # Both daemonise themselves (log in $LOG_DIR, pid in /run).
    "/usr/sbin/$name" || fail "$name did not start"
    touch "$RUN_DIR/$name"
    for ((i = 0; i < 100; i++)); do
        pid_of "$pidfile" "$name" >/dev/null && return 0
        sleep 0.1
    done
    fail "$name exited right after starting"
}

wait_for_node() {
    local t0=$SECONDS st raw last_resume=-100
    while ((SECONDS - t0 < TIMEOUT)); do
        pid_of "$CTLD_PID" slurmctld >/dev/null || fail "slurmctld died"
        pid_of "$SLURMD_PID" slurmd >/dev/null || fail "slurmd died"
        raw=$(node_state_raw)
        st=$(node_state)
        if healthy_state "$st"; then
            log "node $HOST is $raw ($((SECONDS - t0)) s)"
            return 0
        fi
        case $raw in
            inval*)
                timeout 10 scontrol show node "$HOST" >&2 || true
                fail "slurmctld finds node $HOST invalid (its slurm.conf line does not match the machine)"
                ;;
            down | drain* | fail*)
                # responding, but marked down or drained: put it back
                if ((SECONDS - last_resume >= 3)); then
                    log "node $HOST is $raw, resuming it"
                    timeout 10 scontrol update nodename="$HOST" state=resume || true
                    last_resume=$SECONDS
                fi
                ;;
        esac
        sleep 1
    done
    timeout 10 sinfo -N -l >&2 || true
    timeout 10 scontrol show node "$HOST" >&2 || true
    fail "node $HOST not idle after ${TIMEOUT} s (state: '$(node_state_raw)')"
}

wait_for_scheduler() {
    # slurmctld's first scheduling pass comes a few seconds after it starts;
    # batch jobs submitted before then wait for it.
    local i
    for ((i = 0; i < 40; i++)); do
        if (($(timeout 5 sdiag 2>/dev/null | awk '/Total cycles:/ {print $3; exit}' || true) + 0 > 0)); then
            return 0
        fi
        sleep 0.25
    done
    warn "no scheduling pass seen yet (sdiag), going on"
}

check_jobs() {
    local out tmp
    log "check: srun -N1 -n1 -t 1 hostname"
    out=$(timeout 60 srun -N1 -n1 -t 1 -J start-local-slurm-check --chdir=/tmp hostname 2>&1) \
        || fail "srun failed: $out"
    log "srun ran on: $out"
    tmp=$(mktemp -d /tmp/start-local-slurm.XXXXXX)
    chmod 0755 "$tmp"
    cat >"$tmp/job.sh" <<'EOF'
#!/bin/sh
echo "job $SLURM_JOB_ID ran on $(hostname) in partition $SLURM_JOB_PARTITION"
EOF
    wait_for_scheduler
    log "check: sbatch --wait of a tiny script"
    if ! out=$(timeout 120 sbatch --wait -N1 -n1 -t 1 -J start-local-slurm-check \
                   --chdir="$tmp" -o "$tmp/job.out" "$tmp/job.sh" 2>&1); then
        rm -rf "$tmp"
        fail "sbatch --wait failed: $out"
    fi
    log "$out; it printed: $(cat "$tmp/job.out" 2>/dev/null)"
    rm -rf "$tmp"
}

do_start() {
    local t0=$SECONDS
    [[ $(id -u) -eq 0 ]] || die "run this as root"
    install_packages

    # Already up?  Then say so and leave it alone.
    if pid_of "$CTLD_PID" slurmctld >/dev/null && pid_of "$SLURMD_PID" slurmd >/dev/null; then
        if ! conf_is_ours; then
            die "slurmctld and slurmd are running with a slurm.conf this script did not write; stop them first"
        fi
        if [[ "$(cat "$CONF_DIR/slurm.conf")" == "$(make_conf)" ]] && munge_ok; then
            local st
            st=$(node_state)
            if healthy_state "$st"; then
                log "already running: slurmctld and slurmd up, node $HOST is $(node_state_raw)"
                timeout 10 sinfo || true
                return 0
            fi
            log "daemons are up but node $HOST is '$(node_state_raw)'"
        else
            log "daemons are up but the configuration changed; restarting them"
            do_stop
        fi
    fi

    start_munge
    write_conf
    prepare_dirs
    if ((CONF_CHANGED)); then
        local pid
        if pid=$(pid_of "$SLURMD_PID" slurmd); then stop_pid "$pid" slurmd; fi
        if pid=$(pid_of "$CTLD_PID" slurmctld); then stop_pid "$pid" slurmctld; fi
    fi
    start_daemon slurmctld "$CTLD_PID"
    # slurmd registers with slurmctld: give the controller a moment to answer
    local i
    for ((i = 0; i < 50; i++)); do
        timeout 5 scontrol ping >/dev/null 2>&1 && break
        sleep 0.2
    done
    start_daemon slurmd "$SLURMD_PID"
    wait_for_node
    check_jobs
    timeout 10 sinfo || true
    log "SLURM is up on $HOST (partition debug), started in $((SECONDS - t0)) s; stop it with: $0 stop"
}

case "${1:-start}" in
    start) do_start ;;
    stop)
        [[ $(id -u) -eq 0 ]] || die "run this as root"
        do_stop
        ;;
    restart)
        [[ $(id -u) -eq 0 ]] || die "run this as root"
        do_stop
        do_start
        ;;
    -h | --help) awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0" ;;
    *) die "usage: $0 [start|stop|restart]" ;;
esac
