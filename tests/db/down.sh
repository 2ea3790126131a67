#!/usr/bin/env bash
# TEST INFRASTRUCTURE ONLY: stop the PostgreSQL, ClickHouse stand-in, Redis and SeaweedFS started
# by tests/db/up.sh <workdir>, then remove <workdir>. Safe to run twice or after a failed up.sh.
set -euo pipefail

die() { echo "down.sh: $*" >&2; exit 1; }
[[ $# -eq 1 && -n $1 ]] || die "usage: $0 <workdir>"
[[ -d $1 ]] || { echo "down.sh: $1 does not exist, nothing to do" >&2; exit 0; }
WORKDIR="$(cd "$1" && pwd -P)"
PGDATA=$WORKDIR/pg/data
PG_BIN=/usr/lib/postgresql/15/bin

source "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/lib.sh"   # alive, live_pid, stop_pid

# SeaweedFS: one `weed server` process (master, volume, filer and S3 run in it as goroutines).
# It usually exits within a second of SIGTERM, but its filer can wait 15 s trying to flush its
# metadata log into the volume server that already stopped; the data is thrown away, so after
# 5 s it gets SIGKILL without a word.
if pid=$(live_pid "$WORKDIR/pids/seaweedfs.pid" weed); then
  stop_pid "$pid" 5 quiet
  for ((i = 0; i < 20; i++)); do alive "$pid" || break; sleep 0.1; done   # SIGKILL is async
fi
# weed keeps unix sockets in /tmp named after its ports (up.sh recorded ours); it removes most
# of them on a clean exit, not after SIGKILL.
if [[ -f $WORKDIR/seaweedfs/ports ]] && ! live_pid "$WORKDIR/pids/seaweedfs.pid" weed >/dev/null; then
  for port in $(tr -dc '0-9 \n' <"$WORKDIR/seaweedfs/ports"); do
    for svc in master volume filer s3; do
      rm -f "/tmp/seaweedfs-$svc-grpc-$port.sock" "/tmp/seaweedfs-$svc-$port.sock"
    done
  done
fi

# VersityGW (the demo's S3): exits at once on SIGTERM.
if pid=$(live_pid "$WORKDIR/pids/versitygw.pid" versitygw); then
  stop_pid "$pid" 5
fi

# Redis (no persistence configured: SIGTERM exits at once; it deletes its pid file).
if pid=$(live_pid "$WORKDIR/pids/redis.pid" redis-server); then
  stop_pid "$pid" 10
fi

# ClickHouse stand-in (it deletes its own pid file on a clean exit).
if pid=$(live_pid "$WORKDIR/pids/chdb_http.pid" chdb_http.py); then
  stop_pid "$pid" 10
fi

# PostgreSQL: immediate shutdown (the data is thrown away anyway) via pg_ctl as the data
# dir's owner; signals as a fallback.
if pid=$(live_pid "$PGDATA/postmaster.pid" postgres) ||
   pid=$(live_pid "$WORKDIR/pids/postgres.pid" postgres); then
  owner=$(stat -c %U "$PGDATA" 2>/dev/null || echo postgres)
  if (( EUID == 0 )); then
    runuser -u "$owner" -- "$PG_BIN/pg_ctl" -D "$PGDATA" -m immediate -w -t 30 -s stop || true
  else
    "$PG_BIN/pg_ctl" -D "$PGDATA" -m immediate -w -t 30 -s stop || true
  fi
  if alive "$pid"; then stop_pid "$pid" 10; fi
fi

# Only delete directories that up.sh created (marker file), never an arbitrary path.
if [[ -f $WORKDIR/.lfu-test-db ]]; then
  rm -rf -- "$WORKDIR"
else
  echo "down.sh: $WORKDIR has no .lfu-test-db marker; processes stopped, directory kept" >&2
fi
