#!/usr/bin/env bash
# TEST INFRASTRUCTURE ONLY: builds the S3 server tests/db/up.sh starts, from its pinned Go module:
#   seaweedfs  SeaweedFS's `weed` (tests/db/go/seaweedfs): the S3 store the official Langfuse
#              Helm chart 2.x ships; the test tiers use it. Cold: about 250 s on 2 cores.
#   versitygw  VersityGW (tests/db/go/versitygw): an S3 gateway over a plain directory; the
#              demo uses it. Cold: about 70 s on 2 cores.
#   tests/db/build-s3-server.sh <seaweedfs|versitygw>
# Output: ${LFU_CACHE_DIR:-$HOME/.cache/langfuse-upgrade-operator}/<server>-bin/<version>/<binary>
# Prints the binary's path on stdout (everything else goes to stderr).
# Rebuilt only when the binary is missing or the pinned go.mod/go.sum (or Go) changed; a warm
# call takes well under a second.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
source "$here/../lib.sh"   # with_progress
server=${1:-}
case $server in
  seaweedfs) module=github.com/seaweedfs/seaweedfs pkg=$module/weed name=weed estimate=250 ;;
  versitygw) module=github.com/versity/versitygw pkg=$module/cmd/versitygw name=versitygw estimate=70 ;;
  *) echo "build-s3-server.sh: usage: $0 <seaweedfs|versitygw>" >&2; exit 2 ;;
esac
gomod="$here/go/$server"
ldflags="-s -w"

version="$(awk -v m="$module" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$gomod/go.mod")"
[[ -n "$version" ]] || { echo "build-s3-server.sh: cannot read the $module version from $gomod/go.mod" >&2; exit 1; }

cache_root="${LFU_CACHE_DIR:-$HOME/.cache/langfuse-upgrade-operator}"
bin_dir="$cache_root/$server-bin/$version"
bin="$bin_dir/$name"
stamp_file="$bin_dir/.$name.stamp"

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

echo "build-s3-server.sh: building $name $version (first build only: about ${estimate}s on 2 cores)" >&2
start=$SECONDS
# nice: this box shares its 2 cores with cargo and other builds.
with_progress "$name" "$estimate" \
  bash -c 'cd "$1" && exec nice go build -trimpath -ldflags="$2" -o "$3" "$4"' _ "$gomod" "$ldflags" "$bin_dir/.$name.tmp" "$pkg"
mv -f "$bin_dir/.$name.tmp" "$bin"
echo "$stamp" >"$stamp_file"   # written last: an interrupted build gets redone
echo "build-s3-server.sh: built $bin in $((SECONDS - start))s" >&2
echo "$bin"
