#!/usr/bin/env bash
# BENCHMARK INFRASTRUCTURE ONLY: builds Argo Rollouts' controller (cmd/rollouts-controller)
# from the pinned Go module in benches/peers/go/argo-rollouts, for benches/peers/run.sh.
# Output: ${LFU_CACHE_DIR:-$HOME/.cache/langfuse-upgrade-operator}/peers-bin/argo-rollouts-<version>/rollouts-controller
# Prints the binary's path on stdout (everything else goes to stderr).
# Rebuilt only when the binary is missing or the pinned go.mod/go.sum, Go or the flags changed;
# a cold build takes minutes on 2 cores, a warm call well under a second.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
gomod="$here/go/argo-rollouts"
pkg=github.com/argoproj/argo-rollouts/cmd/rollouts-controller

version="$(awk '$1 == "github.com/argoproj/argo-rollouts" && $2 ~ /^v/ { print $2; exit }' "$gomod/go.mod")"
[[ -n "$version" ]] || { echo "build-argo.sh: cannot read the argo-rollouts version from $gomod/go.mod" >&2; exit 1; }
# Stamp the release version as Argo's own Makefile does, so the log line says what runs.
ldflags="-s -w -X github.com/argoproj/argo-rollouts/utils/version.version=${version#v}"
ldflags+=" -X github.com/argoproj/argo-rollouts/utils/version.gitTag=$version"
ldflags+=" -X github.com/argoproj/argo-rollouts/utils/version.gitTreeState=clean"

cache_root="${LFU_CACHE_DIR:-$HOME/.cache/langfuse-upgrade-operator}"
bin_dir="$cache_root/peers-bin/argo-rollouts-$version"
bin="$bin_dir/rollouts-controller"
stamp_file="$bin_dir/.rollouts-controller.stamp"

# Never download a toolchain, never rewrite go.mod/go.sum: the committed go.sum is what makes
# the build reproducible (and it is checked for every download).
export GOTOOLCHAIN=local
export GOFLAGS="-mod=readonly -buildvcs=false"
export CGO_ENABLED=0   # static binary, no C toolchain needed

# The stamp covers the pins, the Go version and the flags; change any of them and we rebuild.
stamp="$(cat "$gomod/go.mod" "$gomod/go.sum" <(go env GOVERSION) <(echo "$ldflags") | sha256sum | cut -d' ' -f1)"
up_to_date() { [[ -x "$bin" && -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp" ]]; }

# Fast path without the lock (also works on a read-only shared cache).
if up_to_date; then
  echo "$bin"
  exit 0
fi

mkdir -p "$bin_dir"
# Serialize concurrent callers; the loser of the race finds the binary built when it gets the lock.
exec 9>"$bin_dir/.lock"
flock 9
if up_to_date; then
  echo "$bin"
  exit 0
fi

echo "build-argo.sh: building rollouts-controller $version (cold: downloads ~400 modules, takes minutes)" >&2
start=$SECONDS
# nice: this box shares its 2 cores with cargo and other builds.
(cd "$gomod" && nice -n 10 go build -trimpath -ldflags="$ldflags" -o "$bin_dir/.rollouts-controller.tmp" "$pkg")
mv -f "$bin_dir/.rollouts-controller.tmp" "$bin"
echo "$stamp" >"$stamp_file"   # written last: an interrupted build gets redone
echo "build-argo.sh: built $bin in $((SECONDS - start))s" >&2
echo "$bin"
