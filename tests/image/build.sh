#!/usr/bin/env bash
# `make image`: the operator's image built here with buildah, FROM scratch (no base image can be
# pulled): the static (musl) release binary, a non-root numeric user, no shell, nothing else.
# Writes an OCI archive to $LFU_IMAGE_OUT (default target/image/langfuse-upgrade-operator.oci.tar).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
log() { echo "[image] $*" >&2; }

source tests/lib.sh
TARGET="$(ensure_musl_target buildah)"
log "release build for $TARGET (static, rustls + ring: no OpenSSL, no libc at run time)"
cargo build --release --locked --target "$TARGET" --bin langfuse-upgrade-operator
bin="target/$TARGET/release/langfuse-upgrade-operator"

version="$(awk -F'"' '/^version =/ { print $2; exit }' Cargo.toml)"
image="${LFU_IMAGE:-ghcr.io/lfu-operator/langfuse-upgrade-operator:$version}"
out="${LFU_IMAGE_OUT:-target/image/langfuse-upgrade-operator.oci.tar}"
mkdir -p "$(dirname "$out")"
export STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot
ctr="$(buildah --storage-driver vfs from scratch)"
trap 'buildah --storage-driver vfs rm "$ctr" >/dev/null 2>&1 || true' EXIT
buildah --storage-driver vfs copy --chmod 0555 "$ctr" "$bin" /usr/local/bin/langfuse-upgrade-operator >/dev/null
buildah --storage-driver vfs config \
  --user 65532:65532 \
  --entrypoint '["/usr/local/bin/langfuse-upgrade-operator"]' \
  --cmd 'run --log-format json' \
  --port 8080 \
  --env RUST_LOG=info \
  --label org.opencontainers.image.title=langfuse-upgrade-operator \
  --label org.opencontainers.image.version="$version" \
  --label org.opencontainers.image.licenses=Apache-2.0 \
  "$ctr"
buildah --storage-driver vfs commit --quiet --rm "$ctr" "$image" >/dev/null
trap - EXIT
rm -f "$out"
buildah --storage-driver vfs push --quiet "$image" "oci-archive:$out:$image"
log "built $image -> $out ($(du -h "$out" | cut -f1))"
