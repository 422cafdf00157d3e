#!/usr/bin/env bash
# Builds (once per machine) the Docker image that tests/systemd.rs boots systemd in:
# a Debian bookworm minbase rootfs with systemd, systemd-sysv and dbus, made by debootstrap
# from Debian's mirror and loaded with `docker import` (no container registry is reachable).
# The rootfs tarball is cached under /var/cache/nodeagent-test/ so a later run only imports it.
#   scripts/systemd-test-image.sh [IMAGE]     default IMAGE: nodeagent-test-systemd:bookworm
set -euo pipefail

image=${1:-nodeagent-test-systemd:bookworm}
cache=/var/cache/nodeagent-test
tarball=$cache/systemd-bookworm-rootfs.tar
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if docker image inspect "$image" >/dev/null 2>&1; then
  exit 0
fi
mkdir -p "$cache"
if [ ! -s "$tarball" ]; then
  command -v debootstrap >/dev/null || { echo "systemd-test-image: debootstrap not installed (scripts/setup.sh test)" >&2; exit 2; }
  dir=$(mktemp -d "$cache/rootfs.XXXXXX")
  trap 'rm -rf "$dir"' EXIT
  echo "systemd-test-image: debootstrap bookworm into $dir (about a minute)" >&2
  debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus bookworm "$dir" "$mirror" >"$cache/debootstrap.log" 2>&1 \
    || { echo "systemd-test-image: debootstrap failed (see $cache/debootstrap.log)" >&2; exit 1; }
  tar -C "$dir" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
fi
docker import "$tarball" "$image" >/dev/null
echo "systemd-test-image: imported $image" >&2
