#!/usr/bin/env bash
# `make demo`: brings up the local control plane and the databases, runs the operator against a
# simulated Langfuse v2 and prints the upgrade as it happens (examples/demo.rs), then cleans up.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

source tests/lib.sh

# LFU_DEMO_PROFILE=release runs the operator as shipped (its share of the upgrade is measured
# on it); the default debug build is quicker to build.
profile=${LFU_DEMO_PROFILE:-debug}
case $profile in debug) flag=() ;; release) flag=(--release) ;; *) echo "demo: LFU_DEMO_PROFILE must be debug or release, not $profile" >&2; exit 2 ;; esac
echo "demo: building the operator ($profile) and the control plane (first run: several minutes)" >&2
# One cargo run where the profiles agree: the example's crates build beside the binaries'.
case $profile in
  debug) cargo build --locked --bin langfuse-upgrade-operator --bin kubectl-lfu --example demo ;;
  release) cargo build --locked "${flag[@]}" --bin langfuse-upgrade-operator --bin kubectl-lfu
           cargo build --locked --example demo ;;
esac
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
export LFU_OPERATOR_BIN="$target_dir/$profile/langfuse-upgrade-operator"
export LFU_KUBECTL_LFU="$target_dir/$profile/kubectl-lfu"
with_cluster_and_databases "$(mktemp -d /tmp/lfu-demo.XXXXXX)" --no-prometheus
cargo run --locked --quiet --example demo
