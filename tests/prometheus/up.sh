#!/usr/bin/env bash
# TEST INFRASTRUCTURE ONLY: start a throwaway Prometheus server (built by build.sh) on loopback.
#
#   tests/prometheus/up.sh <workdir> [host:port ...]   # <workdir> must be absent or empty
#   . <workdir>/env      # LFU_TEST_PROMETHEUS_URL, LFU_TEST_PROMETHEUS_TARGETS (targets.json)
#   tests/prometheus/down.sh <workdir>
#
# Scrape and rule evaluation interval 1s. One scrape job, `lfu-test`, discovers its targets
# from <workdir>/targets.json (file_sd_configs, re-read on change and every 1s), so a test adds
# or removes targets at run time by rewriting that file: write a temporary file in <workdir>
# and rename it over targets.json (tests/prometheus/targets.sh does that), never edit in place.
# The optional host:port arguments are the initial targets.
#
# Env knobs: LFU_TEST_PROM_PORT     port (default 29090; the next free one if taken)
#            LFU_PROMETHEUS_BIN     use this binary instead of running build.sh
#            LFU_PROM_UP_TIMEOUT    seconds to wait for /-/ready (default 60)
#            LFU_CACHE_DIR          build cache (see build.sh)
set -euo pipefail

die() { echo "up.sh: $*" >&2; exit 1; }
log() { echo "up.sh: $*" >&2; }
[[ $# -ge 1 && -n $1 ]] || die "usage: $0 <workdir> [host:port ...]"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
# shellcheck source=tests/lib.sh
source "$HERE/../lib.sh"
BASE_PORT=${LFU_TEST_PROM_PORT:-29090}
TIMEOUT=${LFU_PROM_UP_TIMEOUT:-60}
[[ $BASE_PORT =~ ^[0-9]+$ ]] || die "LFU_TEST_PROM_PORT must be a port number, got '$BASE_PORT'"
[[ $TIMEOUT =~ ^[0-9]+$ ]] || die "LFU_PROM_UP_TIMEOUT must be a number of seconds, got '$TIMEOUT'"

if [[ -e $1 ]]; then
  [[ -d $1 && -z "$(ls -A "$1")" ]] || die "$1 must be absent or an empty directory"
fi

# Build (or find) the binary before creating the workdir: a cold build takes many minutes.
PROM_BIN=${LFU_PROMETHEUS_BIN:-$("$HERE/build.sh")}
[[ -x $PROM_BIN ]] || die "no Prometheus binary at $PROM_BIN"

# ---- workdir ---------------------------------------------------------------------------------
mkdir -p "$1"
WORKDIR="$(cd "$1" && pwd -P)"
shift   # the rest are the initial targets
LOG=$WORKDIR/prometheus.log
PIDFILE=$WORKDIR/prometheus.pid

# From here on a failure tears everything down (down.sh only deletes dirs with the marker).
on_exit() {
  local rc=$?
  trap - EXIT
  if (( rc != 0 )); then
    log "failed (exit $rc); last log lines follow, then teardown"
    [[ -s $LOG ]] && { echo "----- $LOG" >&2; tail -n 25 "$LOG" >&2; }
    "$HERE/down.sh" "$WORKDIR" >&2 || true
  fi
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT TERM
touch "$WORKDIR/.lfu-test-prometheus"
mkdir -p "$WORKDIR/data" "$WORKDIR/targets.d"

"$HERE/targets.sh" "$WORKDIR" "$@"

cat >"$WORKDIR/prometheus.yml" <<EOF
# Written by tests/prometheus/up.sh (throwaway test instance).
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: lfu-test
    # Prometheus 3 refuses a response without a valid Content-Type unless this is set; it
    # lets a test serve a plain file (e.g. python3 -m http.server) as a target.
    fallback_scrape_protocol: PrometheusText0.0.4
    file_sd_configs:
      - files: ['$WORKDIR/targets.json', '$WORKDIR/targets.d/*.json']
        refresh_interval: 1s
EOF
"$PROM_BIN" --version >/dev/null 2>&1 || die "$PROM_BIN --version failed"

# ---- start, retrying on a port lost to a concurrent starter -----------------------------------
ready() { curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:$PORT/-/ready"; }
PORT=$BASE_PORT
started=""
for attempt in 1 2 3 4 5; do
  PORT=$(free_port "$PORT")
  log "starting prometheus on 127.0.0.1:$PORT (attempt $attempt)"
  log_offset=$(( $(stat -c %s "$LOG" 2>/dev/null || echo 0) + 1 ))
  # --scrape.discovery-reload-interval (hidden flag, default 5s): how often the scrape manager
  # applies target changes; 1s makes a target added to targets.json scraped within ~2s, not ~6s.
  # setsid: the server outlives this script's process group; down.sh stops it by pid.
  setsid "$PROM_BIN" \
    --config.file="$WORKDIR/prometheus.yml" \
    --storage.tsdb.path="$WORKDIR/data" \
    --web.listen-address="127.0.0.1:$PORT" \
    --scrape.discovery-reload-interval=1s \
    </dev/null >>"$LOG" 2>&1 &
  pid=$!
  echo "$pid" >"$PIDFILE"
  deadline=$((SECONDS + TIMEOUT))
  until ready 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null || true
      break
    fi
    (( SECONDS < deadline )) || die "prometheus did not get ready within ${TIMEOUT}s"
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then started=1; break; fi
  # It exited: retry on the next port only if it lost the port, anything else is fatal.
  tail -c "+$log_offset" "$LOG" | grep -q 'address already in use' || die "prometheus exited during startup"
  log "port $PORT was taken meanwhile; trying the next one"
  PORT=$((PORT + 1))
done
[[ -n $started ]] || die "no free port found after 5 attempts"

# ---- env file --------------------------------------------------------------------------------
cat >"$WORKDIR/env.tmp" <<EOF
# Written by tests/prometheus/up.sh (throwaway test instance). Source it: . $WORKDIR/env
export LFU_TEST_PROMETHEUS_URL='http://127.0.0.1:$PORT'
export LFU_TEST_PROMETHEUS_TARGETS='$WORKDIR/targets.json'
# One file per test (written to a temporary name, then renamed): parallel tests never share one.
export LFU_TEST_PROMETHEUS_TARGETS_DIR='$WORKDIR/targets.d'
export LFU_TEST_PROMETHEUS_JOB='lfu-test'
export LFU_TEST_PROMETHEUS_WORKDIR='$WORKDIR'
EOF
mv "$WORKDIR/env.tmp" "$WORKDIR/env"
log "ready: http://127.0.0.1:$PORT (pid $pid); env: $WORKDIR/env"
