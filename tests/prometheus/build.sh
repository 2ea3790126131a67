#!/usr/bin/env bash
# TEST INFRASTRUCTURE ONLY: builds the Prometheus server (github.com/prometheus/prometheus/
# cmd/prometheus) from the module pinned in tests/prometheus/go/go.mod.
# Output: ${LFU_CACHE_DIR:-$HOME/.cache/langfuse-upgrade-operator}/prometheus-bin/<version>/prometheus
# Prints the binary's path on stdout (everything else goes to stderr).
# Rebuilt only when it is missing or go.mod/go.sum, the Go version or the build flags change.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
gomod="$here/go"

# The version is whatever go/go.mod pins (single source of truth), e.g. v0.316.0 (= 3.16.0).
mod_version="$(awk '$1 == "github.com/prometheus/prometheus" && $2 ~ /^v/ { print $2; exit }' "$gomod/go.mod")"
[[ -n "$mod_version" ]] || { echo "build.sh: cannot read github.com/prometheus/prometheus version from go.mod" >&2; exit 1; }

cache_root="${LFU_CACHE_DIR:-$HOME/.cache/langfuse-upgrade-operator}"
bin_dir="$cache_root/prometheus-bin/$mod_version"
bin="$bin_dir/prometheus"
stamp_file="$bin_dir/.prometheus.stamp"
mkdir -p "$bin_dir"

# Never download a toolchain, never rewrite go.mod/go.sum (every download is checked
# against the committed go.sum); static binary, no C toolchain needed.
export GOTOOLCHAIN=local
export GOFLAGS="-mod=readonly -buildvcs=false"
export CGO_ENABLED=0

# remove_all_sd: keep only the file and http service discoveries (the tests use file_sd_configs
# and static_configs); drops the cloud/Kubernetes SDs (1043 packages to compile, not 1517).
# No builtinassets tag: the web UI is served from disk (absent, so UI pages fail); the HTTP API
# (/api/v1/*, /-/ready, /-/healthy) is unaffected.
tags="remove_all_sd"

stamp="$(cat "$gomod/go.mod" "$gomod/go.sum" <(go env GOVERSION) <(echo "tags=$tags") | sha256sum | cut -d' ' -f1)"
up_to_date() { [[ -x "$bin" && -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp" ]]; }

if ! up_to_date; then
  # Serialize concurrent callers (e.g. parallel tests all running up.sh); re-check after the wait.
  exec 9>"$bin_dir/.lock"
  flock 9
  if up_to_date; then
    echo "build.sh: prometheus $mod_version built by a concurrent caller" >&2
  else
    start=$SECONDS
    echo "build.sh: building prometheus $mod_version (first run downloads ~1 GB of modules; ~1 GiB peak RSS)" >&2
    # Stamp the same version info the release binaries carry (promu's ldflags), so
    # /api/v1/status/buildinfo and --version report 3.x instead of empty strings.
    mod_dir="$(cd "$gomod" && go mod download -json github.com/prometheus/prometheus | jq -r .Dir)"
    [[ -f "$mod_dir/VERSION" ]] || { echo "build.sh: no VERSION file in $mod_dir" >&2; exit 1; }
    version="$(tr -d '[:space:]' <"$mod_dir/VERSION")"
    vpkg=github.com/prometheus/common/version
    ldflags="-s -w -X $vpkg.Version=$version -X $vpkg.Revision=$mod_version -X $vpkg.Branch=HEAD"
    ldflags+=" -X $vpkg.BuildUser=lfu-tests -X $vpkg.BuildDate=19700101-00:00:00"
    (cd "$gomod" && nice go build -trimpath -tags "$tags" -ldflags="$ldflags" -o "$bin.tmp" \
      github.com/prometheus/prometheus/cmd/prometheus)
    mv -f "$bin.tmp" "$bin"
    echo "$stamp" >"$stamp_file"   # written last: an interrupted build gets redone
    echo "build.sh: built prometheus $version in $((SECONDS - start))s" >&2
  fi
  exec 9>&-
else
  echo "build.sh: prometheus $mod_version up to date" >&2
fi
echo "$bin"
