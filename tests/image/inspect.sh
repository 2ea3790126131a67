#!/usr/bin/env bash
# The image as users get it, inspected: a non-root numeric user, the entrypoint, no shell (nothing
# but the binary), its size; then the binary started from the unpacked image as that user on a
# read-only root. Fails with the reason; never skips.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
archive="${LFU_IMAGE_OUT:-target/image/langfuse-upgrade-operator.oci.tar}"
[[ -f "$archive" ]] || { echo "[image] $archive missing: run tests/image/build.sh (make image)" >&2; exit 1; }
need=()
command -v jq >/dev/null || need+=(jq)
command -v file >/dev/null || need+=(file)
if ((${#need[@]})); then
  "$root/tests/apt-get.sh" update -qq
  "$root/tests/apt-get.sh" install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi
work="$(mktemp -d /tmp/lfu-image.XXXXXX)"
trap 'umount "$work/rootfs" 2>/dev/null || true; rm -rf "$work"' EXIT
bad() { echo "[image] FAIL: $*" >&2; exit 1; }
ok() { echo "[image] ok: $*" >&2; }

mkdir -p "$work/oci" "$work/rootfs"
tar -xf "$archive" -C "$work/oci"
blob() { echo "$work/oci/blobs/${1/://}"; }
manifest="$(jq -r '.manifests[0].digest' "$work/oci/index.json")"
config="$(jq -r '.config.digest' "$(blob "$manifest")")"
cfg="$(blob "$config")"

[[ "$(jq -r '.config.User' "$cfg")" == "65532:65532" ]] || bad "user is $(jq -r '.config.User' "$cfg"), not 65532:65532"
ok "non-root user 65532:65532"
[[ "$(jq -c '.config.Entrypoint' "$cfg")" == '["/usr/local/bin/langfuse-upgrade-operator"]' ]] || bad "entrypoint $(jq -c '.config.Entrypoint' "$cfg")"
[[ "$(jq -c '.config.Cmd' "$cfg")" == '["run","--log-format","json"]' ]] || bad "cmd $(jq -c '.config.Cmd' "$cfg")"
ok "entrypoint and cmd"
for layer in $(jq -r '.layers[].digest' "$(blob "$manifest")"); do
  tar -xf "$(blob "$layer")" -C "$work/rootfs"
done
files="$(cd "$work/rootfs" && find . -type f -o -type l | sort)"
[[ "$files" == "./usr/local/bin/langfuse-upgrade-operator" ]] || bad "the image holds more than the binary: $files"
[[ ! -e "$work/rootfs/bin/sh" ]] || bad "a shell is in the image"
ok "one file, no shell"
file "$work/rootfs/usr/local/bin/langfuse-upgrade-operator" | grep -q 'static' || bad "the binary is not statically linked"
size=$(stat -c %s "$archive")
(( size < 40 * 1024 * 1024 )) || bad "image archive $size bytes (over 40 MiB)"
ok "static binary; image $((size / 1024 / 1024)) MiB"

# Started from the unpacked image: its root mounted read-only, as the image's user.
mount --bind "$work/rootfs" "$work/rootfs"
mount -o remount,bind,ro "$work/rootfs"
touch "$work/rootfs/probe" 2>/dev/null && bad "the root is writable"
run() { chroot --userspec=65532:65532 "$work/rootfs" /usr/local/bin/langfuse-upgrade-operator "$@"; }
# Each output read whole before it is searched: `grep -q` stops reading at its first match, and
# a CRD larger than the pipe's buffer then ends the writer with a broken pipe.
grep -q '^langfuse-upgrade-operator ' <<<"$(run --version)" || bad "--version"
grep -q 'kind: CustomResourceDefinition' <<<"$(run crd)" || bad "crd"
grep -q 'parallelVersion: 3.29.0' <<<"$(run catalog)" || bad "catalog"
# `run` without a cluster: a clear error and a non-zero exit, not a crash.
set +e
err="$(KUBERNETES_SERVICE_HOST= run run --no-leader-election 2>&1 >/dev/null)"; code=$?
set -e
(( code != 0 )) || bad "run without a cluster exited 0"
grep -qi 'panicked' <<<"$err" && bad "run without a cluster panicked: $err"
ok "started as 65532 on a read-only root: --version, crd, catalog; run without a cluster exits $code"
