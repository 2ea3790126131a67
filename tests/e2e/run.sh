#!/usr/bin/env bash
# End-to-end tier: starts the local control plane and the test databases, runs the Rust e2e
# tests against them (the operator binary as a separate process), and always tears down.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

work="$(mktemp -d /tmp/lfu-e2e.XXXXXX)"
# PostgreSQL runs as the postgres user, which must reach its data dir under here.
chmod 755 "$work"
cluster="$work/cluster"
db="$work/db"
cleanup() {
  local rc=$?
  tests/cluster/down.sh "$cluster" >/dev/null 2>&1 || true
  tests/db/down.sh "$db" >/dev/null 2>&1 || true
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT INT TERM

tests/cluster/up.sh "$cluster"
tests/db/up.sh "$db"
export LFU_TEST_CLUSTER_ENV="$cluster/env" LFU_TEST_DB_ENV="$db/env"
# The e2e tests are #[ignore] for a plain `cargo test`; here the servers are up: run them all.
cargo test --locked --test e2e -- --include-ignored --test-threads="${LFU_E2E_THREADS:-3}" "$@"
