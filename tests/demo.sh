#!/usr/bin/env bash
# `make demo`: brings up the local control plane and the databases, runs the operator against a
# simulated Langfuse v2 and prints the upgrade as it happens (examples/demo.rs), then cleans up.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

work="$(mktemp -d /tmp/lfu-demo.XXXXXX)"
# PostgreSQL runs as the postgres user, which must reach its data dir under here.
chmod 755 "$work"
cleanup() {
  local rc=$?
  tests/cluster/down.sh "$work/cluster" >/dev/null 2>&1 || true
  tests/db/down.sh "$work/db" >/dev/null 2>&1 || true
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT INT TERM

echo "demo: building the operator and the control plane (first run: several minutes)" >&2
cargo build --locked --bin langfuse-upgrade-operator --example demo
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
export LFU_OPERATOR_BIN="$target_dir/debug/langfuse-upgrade-operator"
tests/cluster/up.sh "$work/cluster"
tests/db/up.sh "$work/db"
export LFU_TEST_CLUSTER_ENV="$work/cluster/env" LFU_TEST_DB_ENV="$work/db/env"
cargo run --locked --quiet --example demo
