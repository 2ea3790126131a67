#!/usr/bin/env bash
# `make demo`: brings up the local control plane and the databases, runs the operator against a
# simulated Langfuse v2 and prints the upgrade as it happens (examples/demo.rs), then cleans up.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

source tests/lib.sh
# S3: VersityGW, a real S3 gateway that builds in a fifth of SeaweedFS's time (the db tier
# keeps SeaweedFS, the store the official chart 2.x ships; both pass tests/db/up.sh's checks).
export LFU_TEST_S3_SERVER=${LFU_TEST_S3_SERVER:-versitygw}

# LFU_DEMO_PROFILE=release runs the operator as shipped (its share of the upgrade is measured
# on it); the default debug build is quicker to build.
profile=${LFU_DEMO_PROFILE:-debug}
case $profile in debug) flag=() ;; release) flag=(--release) ;; *) echo "demo: LFU_DEMO_PROFILE must be debug or release, not $profile" >&2; exit 2 ;; esac
cache=${LFU_CACHE_DIR:-$HOME/.cache/langfuse-upgrade-operator}
if ! compgen -G "$cache/cluster-bin/*/kube-apiserver" >/dev/null; then
  echo "demo: first run on this machine: the operator, a Kubernetes control plane and an S3 server are built from source (measured cold on 2 cores: about 12 min in all, the upgrade itself at 10.5; later runs about 2 min)" >&2
fi
echo "demo: building the operator ($profile), the control plane and the S3 server" >&2
# The Go servers build beside cargo: each leaves a core idle at times (links, the last crate).
( tests/cluster/build.sh >/dev/null && tests/db/build-s3-server.sh "$LFU_TEST_S3_SERVER" >/dev/null ) \
  2> >(sed -u 's/^/[servers] /' >&2) &
servers=$!
trap 'kill "$servers" 2>/dev/null || true' EXIT   # a failed cargo build stops them too
# One cargo run where the profiles agree: the example's crates build beside the binaries'.
case $profile in
  debug) cargo build --locked --bin langfuse-upgrade-operator --bin kubectl-lfu --example demo ;;
  release) cargo build --locked "${flag[@]}" --bin langfuse-upgrade-operator --bin kubectl-lfu
           cargo build --locked --example demo ;;
esac
wait "$servers" || { echo "demo: building the control plane or the S3 server failed (above)" >&2; exit 1; }
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
export LFU_OPERATOR_BIN="$target_dir/$profile/langfuse-upgrade-operator"
export LFU_KUBECTL_LFU="$target_dir/$profile/kubectl-lfu"
with_cluster_and_databases "$(mktemp -d /tmp/lfu-demo.XXXXXX)" --no-prometheus
cargo run --locked --quiet --example demo
