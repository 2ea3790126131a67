#!/usr/bin/env bash
# Run the database benchmark (benches/db_poll.rs) against throwaway servers: starts them with
# tests/db/up.sh, runs `cargo bench --bench db_poll`, always stops them. Measured, not asserted.
#   benches/run-db-bench.sh                      # 100k and 10M traces rows (~5-10 min)
#   LFU_BENCH_SIZES=100000 benches/run-db-bench.sh
# With servers already up: LFU_TEST_DB_ENV=<workdir>/env cargo bench --bench db_poll
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
ROOT="$(cd "$HERE/.." && pwd -P)"
DB="$ROOT/tests/db"

source "$ROOT/tests/lib.sh"
pick_db_ports   # free ports for every LFU_TEST_*_PORT knob that is not set

WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/lfu-db-bench.XXXXXX")
cleanup() { local rc=$?; trap - EXIT INT TERM; "$DB/down.sh" "$WORKDIR" >&2 || true; exit "$rc"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

"$DB/up.sh" "$WORKDIR"
export LFU_TEST_DB_ENV=$WORKDIR/env
cd "$ROOT"
LFU_BENCH_COMMIT=$(git describe --always --dirty --abbrev=7 2>/dev/null || echo unknown)
export LFU_BENCH_COMMIT
cargo bench --locked -j "${LFU_TEST_JOBS:-2}" --bench db_poll
cargo bench --locked -j "${LFU_TEST_JOBS:-2}" --bench data_model_counts
