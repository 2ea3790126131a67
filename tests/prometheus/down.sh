#!/usr/bin/env bash
# TEST INFRASTRUCTURE ONLY: stop the Prometheus started by tests/prometheus/up.sh <workdir>,
# then remove <workdir>. Safe to run twice or after a failed up.sh.
#   LFU_KEEP_WORKDIR=1  stop the process but keep the directory (log, TSDB) for debugging
set -euo pipefail

die() { echo "down.sh: $*" >&2; exit 1; }
[[ $# -eq 1 && -n $1 ]] || die "usage: $0 <workdir>"
[[ -d $1 ]] || { echo "down.sh: $1 does not exist, nothing to do" >&2; exit 0; }
WORKDIR="$(cd "$1" && pwd -P)"

# True if $1 runs and is not a zombie: the server is reparented to PID 1, which may reap it
# late, and kill -0 succeeds on a zombie.
alive() {
  local st
  st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [[ -n $st && $st != Z ]]
}

# Pid of a live process whose command line contains $2, read from pid file $1; guards
# against signalling an unrelated process that reused a stale pid.
live_pid() {
  local pid
  [[ -f $1 ]] || return 1
  pid=$(head -n 1 "$1" | tr -dc '0-9')
  [[ -n $pid ]] && alive "$pid" &&
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$2" && echo "$pid"
}

# SIGTERM, wait up to $2 seconds, then SIGKILL.
stop_pid() {
  local pid=$1 secs=$2 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < secs * 10; i++)); do
    alive "$pid" || return 0
    sleep 0.1
  done
  echo "down.sh: pid $pid ignored SIGTERM for ${secs}s, sending SIGKILL" >&2
  kill -KILL "$pid" 2>/dev/null || true
}

# Only the Prometheus that reads this workdir's config (it is in its command line).
if pid=$(live_pid "$WORKDIR/prometheus.pid" "--config.file=$WORKDIR/prometheus.yml"); then
  stop_pid "$pid" 10
fi

# Only delete directories that up.sh created (marker file), never an arbitrary path.
if [[ ! -f $WORKDIR/.lfu-test-prometheus ]]; then
  echo "down.sh: $WORKDIR has no .lfu-test-prometheus marker; process stopped, directory kept" >&2
elif [[ ${LFU_KEEP_WORKDIR:-0} == 1 ]]; then
  echo "down.sh: process stopped; kept $WORKDIR" >&2
else
  rm -rf -- "$WORKDIR"
fi
