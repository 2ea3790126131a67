#!/usr/bin/env bash
# TEST INFRASTRUCTURE ONLY: start a throwaway PostgreSQL 15 and the chdb-backed ClickHouse
# HTTP stand-in (tests/db/chdb_http.py) for the operator's integration tests.
#
#   tests/db/up.sh <workdir>     # <workdir> must be absent or empty; it becomes ours
#   . <workdir>/env              # LFU_TEST_DATABASE_URL, LFU_TEST_CLICKHOUSE_{URL,USER,PASSWORD}
#   tests/db/down.sh <workdir>   # stops both, removes <workdir>
#
# Env knobs: LFU_TEST_PG_PORT (55432), LFU_TEST_CH_PORT (58123),
#            LFU_CACHE_DIR (~/.cache/langfuse-upgrade-operator; holds the Python venv),
#            LFU_CHDB_COMPATIBILITY (25.3; ClickHouse `compatibility` setting, '' = off).
# Installs PostgreSQL 15 with apt (needs root) and the pinned chdb-core venv if missing.
set -euo pipefail

die() { echo "up.sh: $*" >&2; exit 1; }
[[ $# -eq 1 && -n $1 ]] || die "usage: $0 <workdir>"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
PG_PORT=${LFU_TEST_PG_PORT:-55432}
CH_PORT=${LFU_TEST_CH_PORT:-58123}
CACHE_DIR=${LFU_CACHE_DIR:-$HOME/.cache/langfuse-upgrade-operator}
VENV=$CACHE_DIR/venv
PG_VERSION=15
PG_BIN=/usr/lib/postgresql/$PG_VERSION/bin
PG_OS_USER=postgres   # postgres refuses to run as root; used only when we are root
DB_USER=langfuse
DB_NAME=langfuse
CH_USER=langfuse
START_TIMEOUT=60

log() { echo "up.sh: $*" >&2; }
# Run a postgres binary unprivileged (as the postgres OS user when we are root).
as_pg() { if (( EUID == 0 )); then runuser -u "$PG_OS_USER" -- "$@"; else "$@"; fi; }
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/lib.sh"
gen_secret() { od -An -tx1 -N24 /dev/urandom | tr -d ' \n'; }   # hex: URL-safe, no quoting

# ---- install (idempotent) -------------------------------------------------------------------
ensure_postgres() {
  [[ -x $PG_BIN/initdb && -x $PG_BIN/postgres && -x $PG_BIN/psql ]] && return 0
  (( EUID == 0 )) || die "PostgreSQL $PG_VERSION missing in $PG_BIN and not root to apt-get it"
  log "installing PostgreSQL $PG_VERSION from apt"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "postgresql-$PG_VERSION" >/dev/null
}

ensure_venv() {
  local req=$HERE/requirements.txt stamp=$VENV/.lfu-requirements.sha256 want
  want=$(sha256sum "$req" | cut -d' ' -f1)
  venv_ok() { [[ -f $stamp && $(cat "$stamp") == "$want" && -x $VENV/bin/python ]]; }
  venv_ok && return 0   # fast path, also works on a read-only shared cache
  mkdir -p "$CACHE_DIR"
  # flock: parallel test binaries may call up.sh at once; only one builds the venv.
  exec 9>"$CACHE_DIR/venv.lock"
  flock 9
  if venv_ok; then exec 9>&-; return 0; fi
  log "creating Python venv with chdb-core in $VENV (first run downloads ~250 MB)"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  # nice: this box shares its CPU with big builds.
  nice "$VENV/bin/python" -m pip install --quiet --no-input --disable-pip-version-check --no-cache-dir \
    -r "$req"
  echo "$want" >"$stamp"   # written last: an interrupted install gets redone
  exec 9>&-
}

# ---- workdir ---------------------------------------------------------------------------------
if [[ -e $1 ]]; then
  [[ -d $1 && -z "$(ls -A "$1")" ]] || die "$1 must be absent or an empty directory"
fi
mkdir -p "$1"
WORKDIR="$(cd "$1" && pwd -P)"
PGDATA=$WORKDIR/pg/data
LOGS=$WORKDIR/logs
PIDS=$WORKDIR/pids

# From here on a failure tears everything down (down.sh only deletes dirs with the marker).
on_exit() {
  local rc=$?
  trap - EXIT
  if (( rc != 0 )); then
    log "failed (exit $rc); last log lines follow, then teardown"
    for f in "$LOGS"/*.log; do
      [[ -s $f ]] && { echo "----- $f" >&2; tail -n 25 "$f" >&2; }
    done
    "$HERE/down.sh" "$WORKDIR" >&2 || true
  fi
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT TERM
touch "$WORKDIR/.lfu-test-db"
mkdir -p "$LOGS" "$PIDS" "$WORKDIR/pg" "$WORKDIR/chdb"

port_in_use "$PG_PORT" && die "port $PG_PORT (LFU_TEST_PG_PORT) is already in use"
port_in_use "$CH_PORT" && die "port $CH_PORT (LFU_TEST_CH_PORT) is already in use"

ensure_postgres
ensure_venv

PG_PASSWORD=$(gen_secret)
CH_PASSWORD=$(gen_secret)

# ---- PostgreSQL ------------------------------------------------------------------------------
: >"$LOGS/postgres.log"
if (( EUID == 0 )); then
  # The postgres user must own its dirs and reach them through <workdir>.
  chmod 0711 "$WORKDIR"
  chown -R "$PG_OS_USER:" "$WORKDIR/pg" "$LOGS/postgres.log"
  runuser -u "$PG_OS_USER" -- test -x "$WORKDIR/pg" ||
    die "user $PG_OS_USER cannot traverse to $WORKDIR (a parent dir is private); use a workdir under /tmp"
fi
chmod 0700 "$WORKDIR/pg"

as_pg "$PG_BIN/initdb" -D "$PGDATA" -U postgres -E UTF8 --locale=C \
  --auth-local=peer --auth-host=scram-sha-256 --no-instructions >>"$LOGS/postgres.log" 2>&1

cat >>"$PGDATA/postgresql.conf" <<EOF

# ---- tests/db/up.sh (throwaway test instance) ----
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = ''    # TCP only: avoids socket path length limits in deep workdirs
fsync = off                     # throwaway data: speed over durability
synchronous_commit = off
full_page_writes = off
shared_buffers = 32MB
max_connections = 100
EOF

# Create the role and database in single-user mode before the server listens: the password
# only travels over stdin (never argv, never logs) and no superuser login is needed later.
as_pg "$PG_BIN/postgres" --single -D "$PGDATA" -c log_min_error_statement=panic postgres \
  >>"$LOGS/postgres.log" 2>&1 <<EOF
CREATE ROLE $DB_USER LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
CREATE DATABASE $DB_NAME OWNER $DB_USER;
EOF

as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$LOGS/postgres.log" -w -t "$START_TIMEOUT" -s start
head -n 1 "$PGDATA/postmaster.pid" >"$PIDS/postgres.pid"

# ---- ClickHouse stand-in ---------------------------------------------------------------------
# setsid: the server outlives this script's process group; down.sh stops it by pid.
LFU_CHDB_HTTP_USER=$CH_USER LFU_CHDB_HTTP_PASSWORD=$CH_PASSWORD \
  setsid "$VENV/bin/python" "$HERE/chdb_http.py" --host 127.0.0.1 --port "$CH_PORT" \
  --data "$WORKDIR/chdb" --pidfile "$PIDS/chdb_http.pid" \
  </dev/null >>"$LOGS/chdb_http.log" 2>&1 &
CH_LAUNCH_PID=$!

# ---- wait until both answer a query ----------------------------------------------------------
pg_query() {
  PGPASSWORD=$PG_PASSWORD PGCONNECT_TIMEOUT=2 "$PG_BIN/psql" -XAtq -h 127.0.0.1 -p "$PG_PORT" \
    -U "$DB_USER" -d "$DB_NAME" -c "$1"
}
ch_query() {  # credentials via a curl config on a pipe, so they are not in argv
  curl -sS --fail-with-body --max-time 5 -K <(printf 'user = "%s:%s"\n' "$CH_USER" "$CH_PASSWORD") \
    --data-binary "$1" "http://127.0.0.1:$CH_PORT/"
}

deadline=$((SECONDS + START_TIMEOUT))
until [[ $(pg_query 'SELECT 1' 2>/dev/null) == 1 ]]; do
  (( SECONDS < deadline )) || die "PostgreSQL did not answer within ${START_TIMEOUT}s"
  sleep 0.2
done
until [[ $(ch_query 'SELECT 1' 2>/dev/null) == 1 ]]; do
  kill -0 "$CH_LAUNCH_PID" 2>/dev/null || die "chdb_http.py exited during startup"
  (( SECONDS < deadline )) || die "ClickHouse stand-in did not answer within ${START_TIMEOUT}s"
  sleep 0.2
done
[[ -s $PIDS/chdb_http.pid ]] || die "chdb_http.py did not write its pid file"

# ---- env file (the only place the passwords are written) -------------------------------------
(
  umask 077
  cat >"$WORKDIR/env.tmp" <<EOF
# Written by tests/db/up.sh: throwaway TEST instance credentials. Source it: . $WORKDIR/env
export LFU_TEST_DATABASE_URL='postgres://$DB_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$DB_NAME'
export LFU_TEST_CLICKHOUSE_URL='http://127.0.0.1:$CH_PORT'
export LFU_TEST_CLICKHOUSE_USER='$CH_USER'
export LFU_TEST_CLICKHOUSE_PASSWORD='$CH_PASSWORD'
export LFU_TEST_DB_WORKDIR='$WORKDIR'
EOF
  mv "$WORKDIR/env.tmp" "$WORKDIR/env"
)

log "ready: postgres 127.0.0.1:$PG_PORT (pid $(cat "$PIDS/postgres.pid")), clickhouse stand-in" \
  "http://127.0.0.1:$CH_PORT (pid $(cat "$PIDS/chdb_http.pid")); env: $WORKDIR/env"
