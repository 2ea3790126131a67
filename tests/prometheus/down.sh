#!/usr/bin/env bash
# TEST INFRASTRUCTURE ONLY: stop the Prometheus started by tests/prometheus/up.sh <workdir>,
# then remove <workdir>. Safe to run twice or after a failed up.sh.
#   LFU_KEEP_WORKDIR=1  stop the process but keep the directory (log, TSDB) for debugging
set -euo pipefail

die() { echo "down.sh: $*" >&2; exit 1; }
[[ $# -eq 1 && -n $1 ]] || die "usage: $0 <workdir>"
[[ -d $1 ]] || { echo "down.sh: $1 does not exist, nothing to do" >&2; exit 0; }
WORKDIR="$(cd "$1" && pwd -P)"

source "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/lib.sh"   # alive, live_pid, stop_pid

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
