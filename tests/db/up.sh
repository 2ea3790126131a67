#!/usr/bin/env bash
# TEST INFRASTRUCTURE ONLY: start a throwaway PostgreSQL 15, the chdb-backed ClickHouse HTTP
# stand-in (tests/db/chdb_http.py), Redis (Debian's redis-server, plain + TLS port) and SeaweedFS
# S3 (the S3 store of the Langfuse Helm chart 2.x; VersityGW with LFU_TEST_S3_SERVER=versitygw)
# for the operator's integration tests. All on 127.0.0.1 only.
#
#   tests/db/up.sh <workdir>     # <workdir> must be absent or empty; it becomes ours
#   . <workdir>/env              # LFU_TEST_DATABASE_URL, LFU_TEST_CLICKHOUSE_*, LFU_TEST_REDIS_*,
#                                # LFU_TEST_S3_* (see tests/db/README.md)
#   tests/db/down.sh <workdir>   # stops them all, removes <workdir>
#
# Env knobs: LFU_TEST_PG_PORT (25432), LFU_TEST_CH_PORT (28123), LFU_TEST_REDIS_PORT (26379),
#            LFU_TEST_REDIS_TLS_PORT (26380), LFU_TEST_S3_PORT (28333; SeaweedFS's internal
#            master/volume/filer/gRPC ports are the next free ones above it),
#            LFU_CACHE_DIR (~/.cache/langfuse-upgrade-operator; holds the Python venv and weed),
#            LFU_TEST_S3_SERVER (seaweedfs; versitygw for the demo, see tests/db/s3-servers.sh),
#            LFU_CHDB_COMPATIBILITY (25.3; ClickHouse `compatibility` setting, '' = off).
# Installs PostgreSQL 15 and redis-server with apt (needs root), the pinned chdb-core venv and
# the pinned S3 server build (tests/db/build-s3-server.sh) if missing.
set -euo pipefail

die() { echo "up.sh: $*" >&2; exit 1; }
[[ $# -eq 1 && -n $1 ]] || die "usage: $0 <workdir>"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
PG_PORT=${LFU_TEST_PG_PORT:-25432}
CH_PORT=${LFU_TEST_CH_PORT:-28123}
REDIS_PORT=${LFU_TEST_REDIS_PORT:-26379}
REDIS_TLS_PORT=${LFU_TEST_REDIS_TLS_PORT:-26380}
S3_PORT=${LFU_TEST_S3_PORT:-28333}
CACHE_DIR=${LFU_CACHE_DIR:-$HOME/.cache/langfuse-upgrade-operator}
VENV=$CACHE_DIR/venv
PG_VERSION=15
PG_BIN=/usr/lib/postgresql/$PG_VERSION/bin
PG_OS_USER=postgres   # postgres refuses to run as root; used only when we are root
DB_USER=langfuse
DB_NAME=langfuse
CH_USER=langfuse
REDIS_SERVER=/usr/bin/redis-server
REDIS_CLI=/usr/bin/redis-cli
S3_REGION=us-east-1
S3_BUCKET=langfuse-events
START_TIMEOUT=60
# seaweedfs (the db tier: the store the official chart 2.x ships) or versitygw (the demo and the
# e2e tier: a real S3 gateway that builds in a fifth of the time); both pass the checks below.
S3_SERVER=${LFU_TEST_S3_SERVER:-seaweedfs}
[[ $S3_SERVER == seaweedfs || $S3_SERVER == versitygw ]] ||
  { echo "up.sh: LFU_TEST_S3_SERVER must be seaweedfs or versitygw, not $S3_SERVER" >&2; exit 2; }

log() { echo "up.sh: $*" >&2; }
# Run a postgres binary unprivileged (as the postgres OS user when we are root).
as_pg() { if (( EUID == 0 )); then runuser -u "$PG_OS_USER" -- "$@"; else "$@"; fi; }
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/lib.sh"
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/s3-servers.sh"
gen_secret() { od -An -tx1 -N24 /dev/urandom | tr -d ' \n'; }   # hex: URL-safe, no quoting
# S3-shaped keys: a 20-character upper-case access key id, a 40-character secret.
gen_access_key() { printf 'LFU%s' "$(od -An -tx1 -N9 /dev/urandom | tr -d ' \n' | tr a-f A-F | cut -c1-17)"; }
gen_secret_key() { od -An -tx1 -N20 /dev/urandom | tr -d ' \n'; }

# ---- install (idempotent) -------------------------------------------------------------------
ensure_postgres() {
  [[ -x $PG_BIN/initdb && -x $PG_BIN/postgres && -x $PG_BIN/psql ]] && return 0
  (( EUID == 0 )) || die "PostgreSQL $PG_VERSION missing in $PG_BIN and not root to apt-get it"
  log "installing PostgreSQL $PG_VERSION from apt"
  "$(dirname "${BASH_SOURCE[0]}")/../apt-get.sh" update -qq
  "$(dirname "${BASH_SOURCE[0]}")/../apt-get.sh" install -y -qq --no-install-recommends \
    "postgresql-$PG_VERSION" >/dev/null
}

ensure_redis() {
  [[ -x $REDIS_SERVER && -x $REDIS_CLI ]] && return 0
  (( EUID == 0 )) || die "redis-server missing ($REDIS_SERVER) and not root to apt-get it"
  log "installing redis-server from apt"
  # Only the binaries are used. (Where package scripts may start services, Debian's own redis
  # also starts on 6379; it is not ours and is left alone.)
  "$(dirname "${BASH_SOURCE[0]}")/../apt-get.sh" update -qq
  "$(dirname "${BASH_SOURCE[0]}")/../apt-get.sh" install -y -qq --no-install-recommends \
    redis-server >/dev/null
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

ports_taken=" "
for knob in PG_PORT CH_PORT REDIS_PORT REDIS_TLS_PORT S3_PORT; do
  p=${!knob}
  if ! [[ $p =~ ^[0-9]+$ ]] || (( p < 1 || p > 65535 )); then die "LFU_TEST_$knob=$p is not a port"; fi
  [[ $ports_taken == *" $p "* ]] && die "port $p is given to two LFU_TEST_*_PORT knobs"
  port_in_use "$p" && die "port $p (LFU_TEST_$knob) is already in use"
  ports_taken+="$p "
done

ensure_postgres
ensure_venv
ensure_redis
# Prints the binary's path; builds it (minutes, once per pin change) when missing.
S3_BIN=$("$HERE/build-s3-server.sh" "$S3_SERVER")

PG_PASSWORD=$(gen_secret)
CH_PASSWORD=$(gen_secret)
REDIS_PASSWORD=$(gen_secret)
S3_ACCESS_KEY_ID=$(gen_access_key)
S3_SECRET_ACCESS_KEY=$(gen_secret_key)
S3_RO_ACCESS_KEY_ID=$(gen_access_key)
S3_RO_SECRET_ACCESS_KEY=$(gen_secret_key)

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
shared_preload_libraries = 'pg_stat_statements'   # make bench counts the queries a poll makes
EOF

# Create the role and database in single-user mode before the server listens: the password
# only travels over stdin (never argv, never logs) and no superuser login is needed later.
as_pg "$PG_BIN/postgres" --single -D "$PGDATA" -c log_min_error_statement=panic postgres \
  >>"$LOGS/postgres.log" 2>&1 <<EOF
CREATE ROLE $DB_USER LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
CREATE DATABASE $DB_NAME OWNER $DB_USER;
EOF
# The view shows every database's statements; it lives in the main test database.
as_pg "$PG_BIN/postgres" --single -D "$PGDATA" -c log_min_error_statement=panic "$DB_NAME" \
  >>"$LOGS/postgres.log" 2>&1 <<EOF
CREATE EXTENSION pg_stat_statements;
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

# ---- Redis ------------------------------------------------------------------------------------
# A throwaway CA and a server certificate for 127.0.0.1/localhost (EC P-256), for the TLS port.
REDIS_TLS=$WORKDIR/redis-tls
mkdir -p "$WORKDIR/redis" "$REDIS_TLS"
ossl() { openssl "$@" >>"$LOGS/openssl.log" 2>&1; }
(
  umask 077
  ossl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$REDIS_TLS/ca.key" -out "$REDIS_TLS/ca.pem" -days 30 \
    -subj "/CN=lfu test redis CA" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign"
  ossl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$REDIS_TLS/server.key" -out "$REDIS_TLS/server.csr" -subj "/CN=127.0.0.1"
  printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost" >"$REDIS_TLS/server.ext"
  ossl x509 -req -in "$REDIS_TLS/server.csr" -CA "$REDIS_TLS/ca.pem" -CAkey "$REDIS_TLS/ca.key" \
    -CAcreateserial -days 30 -extfile "$REDIS_TLS/server.ext" -out "$REDIS_TLS/server.pem"
  chmod 0644 "$REDIS_TLS/ca.pem" "$REDIS_TLS/server.pem"   # public; the keys stay 0600
) || die "openssl failed (see $LOGS/openssl.log)"

# The password lives only in this 0600 config file and the env file, never in argv or logs.
(
  umask 077
  cat >"$WORKDIR/redis/redis.conf" <<EOF
# Written by tests/db/up.sh: throwaway TEST instance.
bind 127.0.0.1
protected-mode yes
port $REDIS_PORT
tls-port $REDIS_TLS_PORT
tls-cert-file $REDIS_TLS/server.pem
tls-key-file $REDIS_TLS/server.key
tls-ca-cert-file $REDIS_TLS/ca.pem
tls-auth-clients no
requirepass $REDIS_PASSWORD
daemonize no
pidfile $PIDS/redis.pid
logfile $LOGS/redis.log
dir $WORKDIR/redis
save ""
appendonly no
maxmemory 128mb
EOF
)
# setsid: the server outlives this script's process group; down.sh stops it by pid.
setsid "$REDIS_SERVER" "$WORKDIR/redis/redis.conf" </dev/null >>"$LOGS/redis.log" 2>&1 &
REDIS_LAUNCH_PID=$!

# ---- S3 (tests/db/s3-servers.sh: SeaweedFS, or VersityGW for the demo) ------------------------
s3_launch
# ---- wait until all answer -------------------------------------------------------------------
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

redis_version() { "$REDIS_SERVER" --version | sed -n 's/.* v=\([^ ]*\).*/\1/p'; }
redis_ping() {  # redis_ping [redis-cli args...]; the password via REDISCLI_AUTH, not argv
  REDISCLI_AUTH=$REDIS_PASSWORD timeout 5 "$REDIS_CLI" -h 127.0.0.1 "$@" PING 2>/dev/null
}
until [[ $(redis_ping -p "$REDIS_PORT") == PONG ]]; do
  kill -0 "$REDIS_LAUNCH_PID" 2>/dev/null || die "redis-server exited during startup"
  (( SECONDS < deadline )) || die "Redis did not answer PING within ${START_TIMEOUT}s"
  sleep 0.2
done
[[ $(redis_ping -p "$REDIS_TLS_PORT" --tls --cacert "$REDIS_TLS/ca.pem") == PONG ]] ||
  die "Redis answers on $REDIS_PORT but not over TLS on $REDIS_TLS_PORT"
[[ -s $PIDS/redis.pid ]] || die "redis-server did not write its pid file"

# s3 <access key> <secret key> <method> <path> [body]: a SigV4-signed request; prints
# "<http status> <S3 error Code or ->". Credentials via a curl config on a pipe, not argv.
# curl 7.88 does not send x-amz-content-sha256 itself (SeaweedFS then rejects any request with
# a body as SignatureDoesNotMatch), and signs a query's '/' unencoded: pass %2F in <path>.
s3() {
  local ak=$1 sk=$2 method=$3 path=$4 payload=${5-} out status code
  local args=(-X "$method")
  [[ -n $payload ]] && args+=(--data-binary "$payload")
  out=$(mktemp "$S3_DIR/.s3-body.XXXXXX")
  status=$(curl -sS --max-time 10 -o "$out" -w '%{http_code}' "${args[@]}" \
    -K <(printf 'user = "%s:%s"\naws-sigv4 = "aws:amz:%s:s3"\n' "$ak" "$sk" "$S3_REGION") \
    -H "x-amz-content-sha256: $(printf '%s' "$payload" | sha256sum | cut -d' ' -f1)" \
    "http://127.0.0.1:$S3_PORT$path" 2>/dev/null) || status=000
  code=$(sed -n 's:.*<Code>\([^<]*\)</Code>.*:\1:p' "$out" | head -n 1)
  rm -f "$out"
  echo "$status ${code:--}"
}
s3_admin() { s3 "$S3_ACCESS_KEY_ID" "$S3_SECRET_ACCESS_KEY" "$@"; }
s3_wait
[[ $(s3_admin PUT "/$S3_BUCKET") == "200 -" ]] || die "could not create S3 bucket $S3_BUCKET"
s3_grant_read_only

# The behaviour the operator's S3 preflight is tested against, from either server; fail here if
# a bump changes it. (SeaweedFS's first write may wait for a volume to be grown: retried until
# the deadline.)
check_s3() {  # check_s3 <want> <what> <got>
  [[ $3 == "$1" ]] || die "$S3_SERVER S3: $2 returned '$3', expected '$1'"
}
probe=/$S3_BUCKET/events/lfu-up-check
until [[ $(s3_admin PUT "$probe" ok) == "200 -" ]]; do
  (( SECONDS < deadline )) || die "$S3_SERVER S3: admin PUT $probe did not succeed within ${START_TIMEOUT}s"
  sleep 0.5
done
check_s3 "204 -" "admin DELETE" "$(s3_admin DELETE "$probe")"
check_s3 "403 AccessDenied" "read-only PUT" \
  "$(s3 "$S3_RO_ACCESS_KEY_ID" "$S3_RO_SECRET_ACCESS_KEY" PUT "$probe" ok)"
check_s3 "200 -" "read-only ListObjectsV2" \
  "$(s3 "$S3_RO_ACCESS_KEY_ID" "$S3_RO_SECRET_ACCESS_KEY" GET "/$S3_BUCKET?list-type=2&prefix=events%2F")"
check_s3 "403 SignatureDoesNotMatch" "wrong secret" \
  "$(s3 "$S3_ACCESS_KEY_ID" "wrong$S3_SECRET_ACCESS_KEY" PUT "$probe" ok)"
check_s3 "403 InvalidAccessKeyId" "unknown access key" \
  "$(s3 "$(gen_access_key)" "$S3_SECRET_ACCESS_KEY" PUT "$probe" ok)"   # the server logs the key id
check_s3 "404 NoSuchBucket" "missing bucket" "$(s3_admin PUT "/lfu-no-such-bucket/events/x" ok)"

# ---- env file (the only place the passwords are written) -------------------------------------
(
  umask 077
  cat >"$WORKDIR/env.tmp" <<EOF
# Written by tests/db/up.sh: throwaway TEST instance credentials. Source it: . $WORKDIR/env
export LFU_TEST_DATABASE_URL='postgres://$DB_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$DB_NAME'
export LFU_TEST_CLICKHOUSE_URL='http://127.0.0.1:$CH_PORT'
export LFU_TEST_CLICKHOUSE_USER='$CH_USER'
export LFU_TEST_CLICKHOUSE_PASSWORD='$CH_PASSWORD'
export LFU_TEST_REDIS_URL='redis://default:$REDIS_PASSWORD@127.0.0.1:$REDIS_PORT/0'
export LFU_TEST_REDIS_HOST='127.0.0.1'
export LFU_TEST_REDIS_PORT='$REDIS_PORT'
export LFU_TEST_REDIS_PASSWORD='$REDIS_PASSWORD'
export LFU_TEST_REDIS_TLS_PORT='$REDIS_TLS_PORT'
export LFU_TEST_REDIS_TLS_CA='$REDIS_TLS/ca.pem'
export LFU_TEST_S3_ENDPOINT='http://127.0.0.1:$S3_PORT'
export LFU_TEST_S3_REGION='$S3_REGION'
export LFU_TEST_S3_BUCKET='$S3_BUCKET'
export LFU_TEST_S3_ACCESS_KEY_ID='$S3_ACCESS_KEY_ID'
export LFU_TEST_S3_SECRET_ACCESS_KEY='$S3_SECRET_ACCESS_KEY'
export LFU_TEST_S3_RO_ACCESS_KEY_ID='$S3_RO_ACCESS_KEY_ID'
export LFU_TEST_S3_RO_SECRET_ACCESS_KEY='$S3_RO_SECRET_ACCESS_KEY'
export LFU_TEST_DB_WORKDIR='$WORKDIR'
EOF
  mv "$WORKDIR/env.tmp" "$WORKDIR/env"
)

log "ready: postgres 127.0.0.1:$PG_PORT (pid $(cat "$PIDS/postgres.pid")), clickhouse stand-in" \
  "http://127.0.0.1:$CH_PORT (pid $(cat "$PIDS/chdb_http.pid")), redis $(redis_version)" \
  "127.0.0.1:$REDIS_PORT + TLS :$REDIS_TLS_PORT (pid $(cat "$PIDS/redis.pid")), $S3_SERVER S3" \
  "http://127.0.0.1:$S3_PORT bucket $S3_BUCKET (pid $S3_PID); env: $WORKDIR/env"
