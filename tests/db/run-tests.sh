#!/usr/bin/env bash
# TEST INFRASTRUCTURE ONLY: the database test tier in one command.
#
#   tests/db/run-tests.sh [extra cargo test args...]
#
# Starts PostgreSQL, the chdb-backed ClickHouse stand-in, Redis and SeaweedFS S3 (tests/db/up.sh)
# in a temporary directory, points LFU_TEST_DB_ENV at its env file, runs the database integration
# tests, and always stops the servers again (down.sh, on success, failure or Ctrl-C). The tests
# FAIL (they never skip) if the servers are missing.
#
# If the default ports (25432, 28123, 26379, 26380, 28333) are taken (another run, another
# engineer), free ones are picked, unless LFU_TEST_PG_PORT / LFU_TEST_CH_PORT /
# LFU_TEST_REDIS_PORT / LFU_TEST_REDIS_TLS_PORT / LFU_TEST_S3_PORT are set explicitly.
# Knobs: CARGO (cargo), LFU_TEST_JOBS (cargo -j, default 2), LFU_TEST_THREADS (test threads).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
ROOT="$(cd "$HERE/../.." && pwd -P)"
CARGO=${CARGO:-cargo}

source "$ROOT/tests/lib.sh"
pick_db_ports   # free ports for every LFU_TEST_*_PORT knob that is not set

WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/lfu-db-tests.XXXXXX")
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  "$HERE/down.sh" "$WORKDIR" >&2 || echo "run-tests.sh: down.sh failed; check $WORKDIR" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$HERE/up.sh" "$WORKDIR"
export LFU_TEST_DB_ENV=$WORKDIR/env

cd "$ROOT"
# The server tests are #[ignore] so a plain `cargo test` passes without servers; here the
# servers are up, so every one of them runs (--include-ignored): nothing is skipped.
args=(test --locked -j "${LFU_TEST_JOBS:-2}" --test postgres --test clickhouse --test standin_worker --test stores --test copies --test data_model "$@" -- --include-ignored)
if [[ -n ${LFU_TEST_THREADS:-} ]]; then
  "$CARGO" "${args[@]}" --test-threads "$LFU_TEST_THREADS"
else
  "$CARGO" "${args[@]}"
fi
