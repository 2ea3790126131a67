# Shell helpers shared by the tier scripts (sourced, never run).

# True when something listens on 127.0.0.1:$1.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The first free port at or above $1.
free_port() {
  local p=$1
  while port_in_use "$p"; do p=$((p + 1)); done
  echo "$p"
}

# Export a free port for each tests/db/up.sh port knob that is not set yet: its default if
# free, else the next free one, never one already given to another knob. Lets a run start
# next to another engineer's env-up (which holds the defaults).
# The defaults lie below the kernel's ephemeral range (32768-60999): a port picked free there
# cannot be taken by an outgoing connection before the server binds it (the demo once lost
# Redis's TLS port, 56380 then, that way).
pick_db_ports() {
  local spec var def p taken=" "
  for spec in LFU_TEST_PG_PORT:25432 LFU_TEST_CH_PORT:28123 LFU_TEST_REDIS_PORT:26379 \
              LFU_TEST_REDIS_TLS_PORT:26380 LFU_TEST_S3_PORT:28333; do
    var=${spec%%:*}
    [[ -n ${!var:-} ]] && taken+="${!var} "
  done
  for spec in LFU_TEST_PG_PORT:25432 LFU_TEST_CH_PORT:28123 LFU_TEST_REDIS_PORT:26379 \
              LFU_TEST_REDIS_TLS_PORT:26380 LFU_TEST_S3_PORT:28333; do
    var=${spec%%:*} def=${spec#*:}
    [[ -n ${!var:-} ]] && continue
    p=$def
    while [[ $taken == *" $p "* ]] || port_in_use "$p"; do p=$((p + 1)); done
    taken+="$p "
    export "$var=$p"
  done
}

# Bring up the control plane and the databases under $1 (a fresh work dir) for a tier that
# needs both, export their env files, and tear everything down on exit, keeping the exit code.
with_cluster_and_databases() {
  LFU_WORK="$1"
  # PostgreSQL runs as the postgres user, which must reach its data dir under here.
  chmod 755 "$LFU_WORK"
  trap 'rc=$?; tests/cluster/down.sh "$LFU_WORK/cluster" >/dev/null 2>&1 || true; tests/db/down.sh "$LFU_WORK/db" >/dev/null 2>&1 || true; tests/prometheus/down.sh "$LFU_WORK/prometheus" >/dev/null 2>&1 || true; rm -rf "$LFU_WORK"; exit $rc' EXIT INT TERM
  tests/cluster/up.sh "$LFU_WORK/cluster"
  pick_db_ports
  tests/db/up.sh "$LFU_WORK/db"
  export LFU_TEST_CLUSTER_ENV="$LFU_WORK/cluster/env" LFU_TEST_DB_ENV="$LFU_WORK/db/env"
  # A real Prometheus for the error-ratio analysis (targets: one file per test); not for the
  # demo (--no-prometheus), which shows no analysis: a first run builds it for 85 s.
  if [[ ${2:-} != --no-prometheus ]]; then
    tests/prometheus/up.sh "$LFU_WORK/prometheus"
    export LFU_TEST_PROMETHEUS_ENV="$LFU_WORK/prometheus/env"
  fi
}

# ---- stopping our own daemons (the down.sh scripts) ----
# True if $1 runs and is not a zombie: our daemons are reparented to PID 1, which may reap
# them late, and kill -0 succeeds on a zombie.
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

# SIGTERM, wait up to $2 seconds, then SIGKILL (saying so unless $3 is "quiet").
stop_pid() {
  local pid=$1 secs=$2 quiet=${3:-} i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < secs * 10; i++)); do
    alive "$pid" || return 0
    sleep 0.1
  done
  [[ $quiet == quiet ]] || echo "down.sh: pid $pid ignored SIGTERM for ${secs}s, sending SIGKILL" >&2
  kill -KILL "$pid" 2>/dev/null || true
}

# The image's build target: the static musl triple, with musl-tools (and any other apt packages
# named, e.g. buildah) installed and the rustup target added when missing. Prints the triple.
MUSL_TARGET=x86_64-unknown-linux-musl
ensure_musl_target() {
  local need=() p
  command -v musl-gcc >/dev/null || need+=(musl-tools)
  for p in "$@"; do command -v "$p" >/dev/null || need+=("$p"); done
  if ((${#need[@]})); then
    echo "installing ${need[*]} (apt)" >&2
    "$(dirname "${BASH_SOURCE[0]}")/apt-get.sh" update -qq >&2
    "$(dirname "${BASH_SOURCE[0]}")/apt-get.sh" install -y -q "${need[@]}" >/dev/null
  fi
  rustup target list --installed | grep -qx "$MUSL_TARGET" || rustup target add "$MUSL_TARGET" >&2
  echo "$MUSL_TARGET"
}

# ---- first-run builds ----
# with_progress <label> <estimate seconds> <command...>: runs the command and, while it runs,
# says every 30 s how long it has taken against the estimate measured on this project's 2-core
# machine (a first run builds for minutes; silence looks like a hang). Keeps its exit code.
with_progress() {
  local label=$1 estimate=$2 start=$SECONDS pid rc
  shift 2
  "$@" &
  pid=$!
  while ! wait_up_to 30 "$pid"; do
    echo "  $label: $((SECONDS - start)) s so far (about $estimate s on 2 cores)" >&2
  done
  wait "$pid" && rc=0 || rc=$?
  return "$rc"
}

# True when $2 has exited within $1 seconds (polled every second).
wait_up_to() {
  local i
  for ((i = 0; i < $1; i++)); do
    kill -0 "$2" 2>/dev/null || return 0
    sleep 1
  done
  return 1
}
