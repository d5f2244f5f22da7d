#!/usr/bin/env bash
# Stop the daemons that start.sh started, and only those: the PIDs in $BIOSAE_SLURM_DIR/*.pid
# (default /tmp/biosae-slurm), each checked to still be the process it names. Jobs still in
# this test cluster are cancelled first so that no slurmstepd outlives slurmd.
# Safe to run twice, or when nothing runs.
set -uo pipefail

state_dir=${BIOSAE_SLURM_DIR:-/tmp/biosae-slurm}

# The PID recorded in $state_dir/NAME.pid if that process still runs NAME (by its command line),
# else nothing: a PID reused by another process since is left alone.
pid_of() {
    local pidfile="$state_dir/$1.pid" pid
    [ -s "$pidfile" ] || return 1
    pid=$(cat "$pidfile")
    [ -r "/proc/$pid/cmdline" ] && tr '\0' '\n' < "/proc/$pid/cmdline" | sed 's#.*/##' | grep -x -- "$1" >/dev/null && echo "$pid"
}

if pid_of slurmctld >/dev/null && command -v scancel >/dev/null; then
    jobs=$(timeout 10 squeue --noheader --format=%i 2>/dev/null || true)
    if [ -n "$jobs" ]; then
        echo "cancelling jobs still in the test cluster: $(echo $jobs)"
        # shellcheck disable=SC2086
        timeout 10 scancel $jobs || true
        for _ in $(seq 1 20); do
            [ -z "$(timeout 5 squeue --noheader --states=RUNNING,COMPLETING --format=%i 2>/dev/null)" ] && break
            sleep 0.5
        done
    fi
fi

# Reverse start order: slurmd, slurmctld, then munged (both SLURM daemons need munge to shut down).
for daemon in slurmd slurmctld munged; do
    pid=$(pid_of "$daemon") || { rm -f "$state_dir/$daemon.pid"; continue; }
    kill -TERM "$pid"
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "$daemon ($pid) ignored SIGTERM for 10 s; sending SIGKILL"
        kill -KILL "$pid"
    fi
    rm -f "$state_dir/$daemon.pid"
    echo "stopped $daemon ($pid)"
done
