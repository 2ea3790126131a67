#!/usr/bin/env bash
# Builds the binaries of the local test control plane from pinned Go modules:
#   go/kubernetes : kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
#   go/etcd       : etcd
#   go/kwok       : kwok (+ its stage manifests, copied next to the binary)
# Output: ${LFU_CACHE_DIR:-$HOME/.cache/langfuse-upgrade-operator}/cluster-bin/<k8s-version>/
# Prints that directory on stdout (everything else goes to stderr).
# A binary is rebuilt only when it is missing or the pinned go.mod/go.sum changed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
gomods="$here/go"
source "$here/../lib.sh"   # with_progress

# The Kubernetes version is whatever go/kubernetes/go.mod pins (single source of truth).
k8s_version="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ { print $2; exit }' "$gomods/kubernetes/go.mod")"
[[ -n "$k8s_version" ]] || { echo "build.sh: cannot read k8s.io/kubernetes version from go.mod" >&2; exit 1; }
k8s_minor="${k8s_version#v1.}"; k8s_minor="${k8s_minor%%.*}"

cache_root="${LFU_CACHE_DIR:-$HOME/.cache/langfuse-upgrade-operator}"
bin_dir="$cache_root/cluster-bin/$k8s_version"
mkdir -p "$bin_dir"
# Serialize concurrent callers (e.g. parallel test clusters all running up.sh).
exec 9>"$bin_dir/.lock"
flock 9

# Never download a toolchain, never rewrite go.mod/go.sum: the committed go.sum
# is what makes the build reproducible (and it is checked for every download).
export GOTOOLCHAIN=local
export GOFLAGS="-mod=readonly -buildvcs=false"
export CGO_ENABLED=0   # static binaries, as upstream builds them; no C toolchain needed

# Version stamps the Kubernetes release scripts (hack/lib/version.sh) put in, so
# `kubectl version` and /version report v1.34.x instead of v0.0.0-master.
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
  k8s_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

# build <module-dir> <output-name> <package> <estimate seconds> [ldflags]: the estimate is a cold
# build's on this project's 2-core machine (2026-12-05), with the ones before it in the cache.
build() {
  local mod="$1" name="$2" pkg="$3" estimate="$4" ldflags="${5:--s -w}"
  local stamp_file="$bin_dir/.$name.stamp" stamp
  # The stamp covers the pins and the Go version; change either and we rebuild.
  stamp="$(cat "$gomods/$mod/go.mod" "$gomods/$mod/go.sum" <(go env GOVERSION) <(echo "$ldflags") | sha256sum | cut -d' ' -f1)"
  if [[ -x "$bin_dir/$name" && -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp" ]]; then
    echo "build.sh: $name up to date" >&2
    return 0
  fi
  echo "build.sh: building $name ($pkg; first build only: about ${estimate}s on 2 cores)" >&2
  local start=$SECONDS
  # One binary at a time (this function is called sequentially) keeps peak memory
  # to a single `go build` (~2-3 GiB for kube-apiserver on 2 cores).
  with_progress "$name" "$estimate" \
    bash -c 'cd "$1" && exec go build -trimpath -ldflags="$2" -o "$3" "$4"' _ \
    "$gomods/$mod" "$ldflags" "$bin_dir/.$name.tmp" "$pkg"
  mv -f "$bin_dir/.$name.tmp" "$bin_dir/$name"
  echo "$stamp" > "$stamp_file"
  echo "build.sh: built $name in $((SECONDS - start))s" >&2
}

total_start=$SECONDS
build etcd etcd go.etcd.io/etcd/server/v3 45
build kubernetes kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver 185 "$k8s_ldflags"
build kubernetes kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager 55 "$k8s_ldflags"
build kubernetes kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler 5 "$k8s_ldflags"
build kubernetes kubectl k8s.io/kubernetes/cmd/kubectl 25 "$k8s_ldflags"
build kwok kwok sigs.k8s.io/kwok/cmd/kwok 70

# The standalone kwok binary has no built-in stages (kwokctl injects them); without
# stages nodes never get Ready and pods never leave Pending. Take the "fast" node
# and pod stages from the very kwok module version we built, so they always match.
kwok_dir="$(cd "$gomods/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
stages_tmp="$bin_dir/.kwok-stages.yaml.tmp"
: > "$stages_tmp"
for f in node/fast/node-initialize.yaml \
         node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
         pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
  { echo "---"; cat "$kwok_dir/kustomize/stage/$f"; } >> "$stages_tmp"
done
mv -f "$stages_tmp" "$bin_dir/kwok-stages.yaml"

echo "build.sh: all binaries ready in $bin_dir ($((SECONDS - total_start))s)" >&2
echo "$bin_dir"
