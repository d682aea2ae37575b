#!/usr/bin/env bash
# Build the buoy images with no registry and no network inside the build:
#   buoy/base     Python venv with buoy + supervisor (from a host-built wheelhouse), HAProxy,
#                 supervisord.conf; ENTRYPOINT `buoy supervise --`
#   buoy/haproxy  the frontend (listen + HAProxy) on port 80, FROM buoy/base
#
# BASE_IMAGE=<image> picks the base (e.g. python:3.11-slim-bookworm when a registry is
# reachable). Without it, a local Debian bookworm rootfs is made once with debootstrap and
# imported as buoy-base-os:bookworm; later runs reuse it. Safe to run again at any time.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DOCKER="${DOCKER:-/usr/bin/docker}"          # Debian's CLI, never /usr/local/bin/docker
PYTHON="${PYTHON:-python3}"
BASE_OS="buoy-base-os:bookworm"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
BASE_TAG="${BASE_TAG:-buoy/base}"
HAPROXY_TAG="${HAPROXY_TAG:-buoy/haproxy}"
WHEELS="$ROOT/images/base/wheels"

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
T0="$(now)"

if [ -z "${BASE_IMAGE:-}" ]; then
  BASE_IMAGE="$BASE_OS"
  if "$DOCKER" image inspect "$BASE_OS" >/dev/null 2>&1; then
    echo "build: base-os reused image=$BASE_OS"
  else
    t="$(now)"
    rootfs="$(mktemp -d /tmp/buoy-rootfs.XXXXXX)"
    trap 'rm -rf "$rootfs"' EXIT
    # python3-venv brings ensurepip (the venv's pip); haproxy is baked in so the image
    # build itself needs no apt and no network.
    debootstrap --variant=minbase \
      --include=python3,python3-venv,ca-certificates,haproxy bookworm "$rootfs" "$MIRROR" \
      >"$rootfs.log" 2>&1 || { tail -20 "$rootfs.log"; exit 1; }
    rm -rf "$rootfs/var/cache/apt/archives/"*.deb "$rootfs/var/lib/apt/lists/"*
    tar -C "$rootfs" -c . | "$DOCKER" import - "$BASE_OS" >/dev/null
    rm -rf "$rootfs" "$rootfs.log"
    trap - EXIT
    echo "build: base-os imported image=$BASE_OS seconds=$(since "$t")"
  fi
fi

t="$(now)"
# The buoy wheel is rebuilt every time (the code may have changed); dependencies already
# in the wheelhouse are kept.
rm -f "$WHEELS"/buoy-*.whl
rm -rf "$ROOT/build"   # a stale setuptools build dir would put old files into the wheel
"$PYTHON" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$WHEELS" "$ROOT" supervisor
echo "build: wheelhouse wheels=$(ls "$WHEELS"/*.whl | wc -l) seconds=$(since "$t")"

t="$(now)"
# The context is a tar of the Dockerfile, the wheelhouse and the top-level supervisord.conf,
# so nothing is copied into the source tree.
tar -c -C "$ROOT/images/base" Dockerfile wheels -C "$ROOT" supervisord.conf \
  | "$DOCKER" build --quiet --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$BASE_TAG" - >/dev/null
echo "build: image=$BASE_TAG from=$BASE_IMAGE seconds=$(since "$t")"

t="$(now)"
tar -c -C "$ROOT/images/haproxy" Dockerfile \
  | "$DOCKER" build --quiet --build-arg "BASE=$BASE_TAG" -t "$HAPROXY_TAG" - >/dev/null
echo "build: image=$HAPROXY_TAG seconds=$(since "$t")"
echo "build: done seconds=$(since "$T0")"
