#!/usr/bin/env bash
# TEST INFRASTRUCTURE ONLY: builds SeaweedFS's `weed` (the S3 store the official Langfuse Helm
# chart 2.x ships) from the pinned Go module in tests/db/go/seaweedfs, for tests/db/up.sh.
# Output: ${LFU_CACHE_DIR:-$HOME/.cache/langfuse-upgrade-operator}/seaweedfs-bin/<version>/weed
# Prints the binary's path on stdout (everything else goes to stderr).
# Rebuilt only when the binary is missing or the pinned go.mod/go.sum (or Go) changed; a cold
# build takes minutes on 2 cores (see tests/db/README.md), a warm call well under a second.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
gomod="$here/go/seaweedfs"
pkg=github.com/seaweedfs/seaweedfs/weed
ldflags="-s -w"

version="$(awk '$1 == "github.com/seaweedfs/seaweedfs" && $2 ~ /^v/ { print $2; exit }' "$gomod/go.mod")"
[[ -n "$version" ]] || { echo "build-seaweedfs.sh: cannot read the seaweedfs version from $gomod/go.mod" >&2; exit 1; }

cache_root="${LFU_CACHE_DIR:-$HOME/.cache/langfuse-upgrade-operator}"
bin_dir="$cache_root/seaweedfs-bin/$version"
bin="$bin_dir/weed"
stamp_file="$bin_dir/.weed.stamp"

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
# Serialize concurrent callers (parallel test runs all calling up.sh); the loser of the race
# finds the binary built when it gets the lock.
exec 9>"$bin_dir/.lock"
flock 9
if up_to_date; then
  echo "$bin"
  exit 0
fi

echo "build-seaweedfs.sh: building weed $version (first build downloads ~300 modules and takes minutes)" >&2
start=$SECONDS
# nice: this box shares its 2 cores with cargo and other builds.
(cd "$gomod" && nice go build -trimpath -ldflags="$ldflags" -o "$bin_dir/.weed.tmp" "$pkg")
mv -f "$bin_dir/.weed.tmp" "$bin"
echo "$stamp" >"$stamp_file"   # written last: an interrupted build gets redone
echo "build-seaweedfs.sh: built $bin in $((SECONDS - start))s" >&2
echo "$bin"
