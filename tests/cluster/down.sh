#!/usr/bin/env bash
# Stops a control plane started by up.sh (via its pid files, newest first) and
# removes its workdir. Safe to run twice and on a half-started cluster.
# Usage: tests/cluster/down.sh <workdir>
#   LFU_KEEP_WORKDIR=1  stop the processes but keep the directory (logs) around
set -euo pipefail

[[ $# -eq 1 ]] || { echo "usage: $0 <workdir>" >&2; exit 2; }
[[ -d "$1" ]] || exit 0
wd="$(cd "$1" && pwd)"
# Only touch directories up.sh created (guards against a mistyped path + rm -rf).
if [[ ! -f "$wd/.lfu-cluster" ]]; then
  echo "down.sh: $wd was not created by up.sh (no .lfu-cluster marker); refusing" >&2
  exit 1
fi

# alive <pid> <name>: the pid runs and is still our binary (guards against pid reuse).
alive() {
  local cmd
  cmd="$(tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null)" || return 1
  [[ "$cmd" == *"/$2 "* ]] && kill -0 "$1" 2>/dev/null
}

if [[ -f "$wd/pids/order" ]]; then
  # Reverse start order: kwok, scheduler, controller-manager, apiserver, etcd last.
  names=()
  while read -r n; do names=("$n" "${names[@]}"); done < "$wd/pids/order"
  for n in "${names[@]}"; do
    pidfile="$wd/pids/$n.pid"
    [[ -f "$pidfile" ]] || continue
    pid="$(cat "$pidfile")"
    if alive "$pid" "$n"; then
      kill -TERM "$pid" 2>/dev/null || true
      # Graceful first (etcd and the apiserver shut down cleanly in ~1s), then force.
      for _ in $(seq 1 50); do alive "$pid" "$n" || break; sleep 0.2; done
      if alive "$pid" "$n"; then
        echo "down.sh: $n ($pid) ignored SIGTERM, killing" >&2
        kill -KILL "$pid" 2>/dev/null || true
        for _ in $(seq 1 25); do alive "$pid" "$n" || break; sleep 0.2; done
      fi
    fi
    rm -f "$pidfile"
  done
fi

if [[ "${LFU_KEEP_WORKDIR:-0}" == 1 ]]; then
  echo "down.sh: processes stopped; kept $wd" >&2
else
  rm -rf -- "$wd"
fi
