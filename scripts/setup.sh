#!/usr/bin/env bash
# Installs what nodeagent's build, demo and tests need on a Debian/Ubuntu machine, as root,
# and starts the services the tests use. Idempotent: it installs only what is missing.
#   scripts/setup.sh demo   build + demo needs (hwloc, numactl)
#   scripts/setup.sh test   everything the test suite uses (adds docker.io, qemu, systemd tools...)
#   scripts/setup.sh deb    demo's, and cargo-deb for `make deb`
set -euo pipefail

mode=${1:-demo}

# Build and demo: a C toolchain (Rust links with cc; some crates compile C), and hwlocality
# links libhwloc (and libudev, which Debian's libhwloc needs).
packages=(build-essential pkg-config libhwloc-dev libudev-dev hwloc numactl)
if [ "$mode" = test ]; then
  # debian-archive-keyring: debootstrap verifies bookworm with it (already there on Debian, not on Ubuntu).
  packages+=(docker.io qemu-system-x86 busybox-static cpio debootstrap debian-archive-keyring systemd prometheus wrk)
  # The serve tests' stand-in engine is a Python script; the real-engine check builds
  # llama.cpp's server into a virtualenv (pip fetches cmake itself) and talks to it with curl.
  packages+=(python3 python3-venv curl)
  # tests/fleet.rs: Slurm's slurmd reads the generated gres.conf (slurmd -G); it is never
  # started as a service.
  packages+=(slurmd)
  # tests/package.rs: Debian's package checker on the .deb.
  packages+=(lintian)
  # tests/raymn.rs: two network namespaces joined by a veth pair (ip netns, nsenter).
  packages+=(iproute2 util-linux)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found: install a Rust toolchain (1.85 or newer) first" >&2
  exit 2
fi

if [ "$mode" = test ]; then
  # A Docker engine for the container-mode tests: start dockerd when none answers.
  if ! docker info >/dev/null 2>&1; then
    echo "setup: starting dockerd" >&2
    nohup dockerd >/var/log/nodeagent-test-dockerd.log 2>&1 &
    for _ in $(seq 1 60); do
      docker info >/dev/null 2>&1 && break
      sleep 1
    done
    docker info >/dev/null 2>&1 || { echo "setup: dockerd did not start (see /var/log/nodeagent-test-dockerd.log)" >&2; exit 1; }
  fi
fi

if [ "$mode" = test ]; then
  # tests/fleet.rs validates deploy/kubernetes/ against the Kubernetes API schemas, offline,
  # with kubernetes-validate from PyPI (it bundles the schemas), in a cached virtualenv.
  K8S_VENV=${NODEAGENT_K8S_VENV:-/var/cache/nodeagent-test/k8s-venv}
  if [ ! -x "$K8S_VENV/bin/kubernetes-validate" ]; then
    echo "setup: installing kubernetes-validate into $K8S_VENV" >&2
    mkdir -p "$(dirname "$K8S_VENV")"
    python3 -m venv "$K8S_VENV"
    "$K8S_VENV/bin/pip" install -q 'kubernetes-validate==1.37.0'
  fi
  # The real Ray for tests/ray.rs, cached in /var/cache/nodeagent-test/ray-venv (only when missing).
  "$(dirname "$0")/ray-venv.sh"
fi

if [ "$mode" = test ] || [ "$mode" = deb ]; then
  # tests/package.rs and `make deb`: cargo-deb builds the Debian package, cached like the venvs
  # (pkg/build-deb.sh looks there when it is not on PATH).
  CARGO_DEB_ROOT=/var/cache/nodeagent-test/cargo-deb
  if ! command -v cargo-deb >/dev/null 2>&1 && [ ! -x "$CARGO_DEB_ROOT/bin/cargo-deb" ]; then
    echo "setup: installing cargo-deb into $CARGO_DEB_ROOT (a few minutes)" >&2
    cargo install -q --locked --version 3.8.0 --root "$CARGO_DEB_ROOT" cargo-deb
  fi
fi
