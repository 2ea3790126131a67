#!/usr/bin/env bash
# End-to-end tier: starts the local control plane and the test databases, runs the Rust e2e
# tests against them (the operator binary as a separate process), and always tears down.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

source tests/lib.sh
# S3: VersityGW, a real S3 gateway that builds in a fifth of SeaweedFS's time (the db tier
# keeps SeaweedFS, the store the official chart 2.x ships; both pass tests/db/up.sh's checks).
export LFU_TEST_S3_SERVER=${LFU_TEST_S3_SERVER:-versitygw}
with_cluster_and_databases "$(mktemp -d /tmp/lfu-e2e.XXXXXX)"
# The e2e tests are #[ignore] for a plain `cargo test`; here the servers are up: run them all.
cargo test --locked --test e2e --test e2e_road -- --include-ignored --test-threads="${LFU_E2E_THREADS:-3}" \
  --skip faults_on_real_servers "$@"
# The fault table stops the servers every test shares: alone, after the others.
cargo test --locked --test e2e -- --include-ignored --exact \
  faults_on_real_servers_are_reported_waited_out_and_recovered_from "$@"
