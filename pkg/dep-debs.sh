#!/usr/bin/env bash
# Downloads (once per machine) the Debian packages nodeagent's package depends on that the
# minimal test images lack (Debian bookworm's libhwloc15, numactl and libnuma1), so that
# tests/package.rs can install nodeagent's .deb inside a container with no network: the
# container gets these first, as a node has them from its own mirror. Prints the directory.
#   pkg/dep-debs.sh            cached in /var/cache/nodeagent-test/debs
set -euo pipefail

dir=${NODEAGENT_DEP_DEBS:-/var/cache/nodeagent-test/debs}
mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
for p in libhwloc15 libnuma1 numactl; do
  if ! ls "$dir/${p}"_*.deb >/dev/null 2>&1; then
    # apt's sandbox user cannot write into root's cache directory: download as root.
    (cd "$dir" && apt-get download -o APT::Sandbox::User=root "$p" >/dev/null) \
      || { echo "dep-debs: apt-get download $p failed (is the Debian mirror reachable?)" >&2; exit 1; }
  fi
done
echo "$dir"
