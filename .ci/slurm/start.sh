#!/usr/bin/env bash
# Start a single-node SLURM cluster on localhost for CI: munged (as user munge), slurmctld and
# slurmd, each in foreground mode (-F / -D) in the background, so that their PIDs are known and
# stop.sh can end exactly these processes. Waits until `sinfo` shows the node idle.
#
# Run as root, after install.sh. Writes /etc/slurm/slurm.conf and /etc/slurm/cgroup.conf (only
# if absent or written by this script before), state, logs and PID files under $BIOSAE_SLURM_DIR
# (default /tmp/biosae-slurm). Prints nothing but progress; exit status 0 = the node is idle.
#
# No slurmdbd: the snakemake slurm plugin's default status check (sacct) would hang, so the
# profiles/slurm-ci profile uses `slurm-status-command: squeue`, which the plugin accepts only
# when MinJobAge >= 3 x its init-seconds-before-status-checks; MinJobAge=300 keeps finished
# jobs visible to squeue for 5 minutes.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
state_dir=${BIOSAE_SLURM_DIR:-/tmp/biosae-slurm}
wait_seconds=${BIOSAE_SLURM_WAIT:-60}
marker="# written by biosae .ci/slurm/start.sh"
slurm_conf=/etc/slurm/slurm.conf
cgroup_conf=/etc/slurm/cgroup.conf

die() { echo "start.sh: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (munged runs as user munge, the SLURM daemons as root)"
for tool in munged slurmctld slurmd sinfo setpriv; do
    command -v "$tool" >/dev/null || die "$tool not found; run .ci/slurm/install.sh first"
done

# The PID recorded in $state_dir/NAME.pid if that process still runs NAME (by its command line,
# which also matches munged in the instant before setpriv has exec'd it), else nothing.
pid_of() {
    local pidfile="$state_dir/$1.pid" pid
    [ -s "$pidfile" ] || return 1
    pid=$(cat "$pidfile")
    [ -r "/proc/$pid/cmdline" ] && tr '\0' '\n' < "/proc/$pid/cmdline" | sed 's#.*/##' | grep -x -- "$1" >/dev/null && echo "$pid"
}
alive() { pid_of "$1" >/dev/null; }

node_state() { timeout 10 sinfo --noheader --Node --format=%T 2>/dev/null | head -n1 || true; }

if alive munged && alive slurmctld && alive slurmd; then
    echo "SLURM already running from $state_dir (node: $(node_state))"
    exit 0
fi
for daemon in munged slurmctld slurmd; do
    ! alive "$daemon" || die "$daemon from a previous start still runs; run .ci/slurm/stop.sh first"
done

# Another controller on this machine (slurmctld's default port) would share slurm.conf.
if timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/6817' 2>/dev/null; then
    die "a slurmctld not started from $state_dir listens on port 6817; stop it first"
fi
for conf in "$slurm_conf" "$cgroup_conf"; do
    if [ -e "$conf" ] && ! grep -qxF "$marker" "$conf"; then
        die "$conf exists and was not written by this script; refusing to overwrite it"
    fi
done

mkdir -p "$state_dir"/{log,slurmctld,slurmd} /etc/slurm
rm -f "$state_dir"/*.pid

# This machine's CPUs, sockets, cores and memory, as slurmd itself detects them.
node_name=$(hostname -s)
hardware=$(slurmd -C | head -n1 | sed -e 's/^NodeName=[^ ]* //')
[[ "$hardware" == *CPUs=* && "$hardware" == *RealMemory=* ]] || die "unexpected slurmd -C output: $hardware"

cat > "$slurm_conf" <<CONF
$marker
# Single-node test cluster for biosae CI; see .ci/slurm/start.sh.
ClusterName=biosae-ci
SlurmctldHost=$node_name(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$state_dir/slurmctld
SlurmdSpoolDir=$state_dir/slurmd
SlurmctldPidFile=$state_dir/slurmctld.daemon.pid
SlurmdPidFile=$state_dir/slurmd.daemon.pid
SlurmctldLogFile=$state_dir/log/slurmctld.log
SlurmdLogFile=$state_dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# squeue must still see a finished job when the snakemake plugin polls it (see above).
MinJobAge=300
ReturnToService=2
SchedulerType=sched/backfill
NodeName=$node_name NodeAddr=127.0.0.1 $hardware State=UNKNOWN
PartitionName=debug Nodes=$node_name Default=YES MaxTime=INFINITE State=UP
CONF

cat > "$cgroup_conf" <<CONF
$marker
# Unused by proctrack/linuxproc and task/none; present because slurmd looks for it.
CgroupPlugin=autodetect
ConstrainCores=no
ConstrainRAMSpace=no
CONF

# From here on a failure stops whatever this script has started (stop.sh ends only the PIDs
# recorded below).
trap 'status=$?; [ $status -eq 0 ] || BIOSAE_SLURM_DIR="$state_dir" "$here/stop.sh" >&2' EXIT

# munged as user munge, in the foreground (-F) so that $! is munged itself (setpriv execs).
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
if [ ! -s /etc/munge/munge.key ]; then  # the munge package's postinst normally creates it
    install -d -o munge -g munge -m 0700 /etc/munge
    mungekey --create --keyfile /etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key
fi
setpriv --reuid=munge --regid=munge --init-groups -- munged --foreground \
    >"$state_dir/log/munged.out" 2>&1 &
echo $! > "$state_dir/munged.pid"

for _ in $(seq 1 50); do
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
    alive munged || die "munged exited; see $state_dir/log/munged.out"
    sleep 0.2
done
munge -n | unmunge >/dev/null || die "munge does not answer; see $state_dir/log/munged.out"

slurmctld -D -c >"$state_dir/log/slurmctld.out" 2>&1 &
echo $! > "$state_dir/slurmctld.pid"
slurmd -D -N "$node_name" >"$state_dir/log/slurmd.out" 2>&1 &
echo $! > "$state_dir/slurmd.pid"

state=""
for _ in $(seq 1 "$wait_seconds"); do
    for daemon in munged slurmctld slurmd; do
        alive "$daemon" || die "$daemon exited; see $state_dir/log/"
    done
    state=$(node_state)
    if [ "$state" = "idle" ]; then
        echo "SLURM up: node $node_name idle ($hardware); PIDs in $state_dir/*.pid"
        exit 0
    fi
    sleep 1
done
die "node $node_name not idle after ${wait_seconds}s (state: '${state}'); see $state_dir/log/"
