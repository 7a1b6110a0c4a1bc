#!/usr/bin/env bash
# Builds culprit's container image (Containerfile) without a daemon, and writes it as a
# docker-archive tarball that `docker load`, `podman load` or `skopeo copy` take.
#
#   bash scripts/image.sh
#
# Environment: CULPRIT_IMAGE (tag, default localhost/culprit:<version>), CULPRIT_IMAGE_OUT
# (tarball, default target-image/culprit-image.tar), CARGO_TARGET_DIR (default
# ~/.cache/culprit-target-image: the static build has its own flags, so its own cache),
# CULPRIT_IMAGE_BIN (a static culprit binary built before, e.g. by CI: skips the cargo build).
#
# The binary is built on the host with `-C target-feature=+crt-static` for x86_64 glibc (the flag
# reaches only the target, not build scripts), so the image needs no base image and no network
# to build. buildah (Debian's package) runs with the vfs storage driver and chroot isolation,
# which work without a daemon, without root privileges of a container engine and without
# overlayfs. Installs buildah with apt when it is missing, as scripts/test.sh does for its
# packages.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

TARGET=x86_64-unknown-linux-gnu
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
IMAGE="${CULPRIT_IMAGE:-localhost/culprit:$VERSION}"
OUT="${CULPRIT_IMAGE_OUT:-target-image/culprit-image.tar}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/culprit-target-image}"
BUILDAH=(buildah --storage-driver vfs)

if ! command -v buildah >/dev/null 2>&1; then
  log "installing buildah"
  sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq buildah >/dev/null
fi
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
[[ -s $CA_BUNDLE ]] || { echo "image.sh: no CA bundle at $CA_BUNDLE (apt-get install ca-certificates)" >&2; exit 1; }

if [[ -n ${CULPRIT_IMAGE_BIN:-} ]]; then
  BIN=$CULPRIT_IMAGE_BIN
  log "static binary: $BIN (CULPRIT_IMAGE_BIN, not built here)"
else
  log "static binary ($TARGET, +crt-static)"
  start=$(date +%s)
  # No debug info in the image (the release profile keeps line tables for local profiling).
  RUSTFLAGS="-C target-feature=+crt-static" CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=debuginfo \
    cargo build --release --locked -p culprit --target "$TARGET"
  echo "built in $(( $(date +%s) - start )) s"
  BIN="$CARGO_TARGET_DIR/$TARGET/release/culprit"
fi
# A FROM-scratch image has no shared libraries: the binary must need none.
if readelf -d "$BIN" | grep -q '(NEEDED)'; then
  echo "image.sh: $BIN needs shared libraries:" >&2; readelf -d "$BIN" | grep '(NEEDED)' >&2; exit 1
fi

log "build context"
CTX=$(mktemp -d "${TMPDIR:-/tmp}/culprit-image.XXXXXX")
trap 'rm -rf "$CTX"' EXIT
# /var/lib exists, root-owned, before COPY --chown creates /var/lib/culprit (it would chown the
# parents it creates).
mkdir -p "$CTX/rootfs/usr/local/bin" "$CTX/rootfs/etc/ssl/certs" "$CTX/rootfs/tmp" "$CTX/rootfs/var/lib" "$CTX/state"
install -m 0755 "$BIN" "$CTX/rootfs/usr/local/bin/culprit"
install -m 0644 "$CA_BUNDLE" "$CTX/rootfs/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/var/lib/culprit:/sbin/nologin\n' >"$CTX/rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$CTX/rootfs/etc/group"
chmod 0644 "$CTX/rootfs/etc/passwd" "$CTX/rootfs/etc/group"
chmod 1777 "$CTX/rootfs/tmp"
cp Containerfile "$CTX/Containerfile"

log "image $IMAGE (buildah, vfs, chroot isolation)"
"${BUILDAH[@]}" bud --isolation chroot --layers=false -f "$CTX/Containerfile" -t "$IMAGE" "$CTX"

log "smoke test: the image runs culprit as user 65532"
ctr=$("${BUILDAH[@]}" from "$IMAGE")
cleanup_ctr() { "${BUILDAH[@]}" rm "$ctr" >/dev/null 2>&1 || true; rm -rf "$CTX"; }
trap cleanup_ctr EXIT
"${BUILDAH[@]}" run --isolation chroot "$ctr" -- /usr/local/bin/culprit --version
user=$("${BUILDAH[@]}" inspect --format '{{.OCIv1.Config.User}}' "$IMAGE")
[[ $user == 65532:65532 ]] || { echo "image.sh: image user is '$user', not 65532:65532" >&2; exit 1; }

log "docker-archive $OUT"
mkdir -p "$(dirname "$OUT")"
rm -f "$OUT"
"${BUILDAH[@]}" push "$IMAGE" "docker-archive:$OUT:$IMAGE"
echo "binary:  $(du -h "$BIN" | cut -f1) ($BIN)"
echo "image:   $("${BUILDAH[@]}" images --format '{{.Size}}' "$IMAGE") (uncompressed layers)"
echo "tarball: $(du -h "$OUT" | cut -f1) ($OUT)"
