#!/usr/bin/env bash
# Builds the DaemonSet's image, tagged nodeagent:<version> (what deploy/kubernetes/daemonset.yaml
# references), from the Debian package, with `docker build` and no registry:
#   deploy/image/build.sh DEB [--base IMAGE] [--deps DIR] [--tag TAG]
# DEB        the package (`make deb`: target/debian/nodeagent_<version>-1_<arch>.deb)
# --base     the base image (default debian:bookworm-slim, which needs a registry; offline, name a
#            Debian bookworm image already in the local store)
# --deps     a directory of .deb files the base lacks (offline: pkg/dep-debs.sh gives one)
# --tag      default nodeagent:<the package's upstream version>
# --print-tag  print the tag it would give and build nothing
# Prints the tag.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
deb=${1:?usage: deploy/image/build.sh DEB [--base IMAGE] [--deps DIR] [--tag TAG]}
shift
base=debian:bookworm-slim
deps=
tag=
print_only=
while [ $# -gt 0 ]; do
  case $1 in
    --base) base=${2:?--base needs a value}; shift 2 ;;
    --deps) deps=${2:?--deps needs a value}; shift 2 ;;
    --tag) tag=${2:?--tag needs a value}; shift 2 ;;
    --print-tag) print_only=1; shift ;;
    *) echo "image: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -f "$deb" ] || { echo "image: package $deb not found (make deb builds it)" >&2; exit 2; }
if [ -z "$tag" ]; then
  version=$(dpkg-deb -f "$deb" Version)
  tag="nodeagent:${version%-*}"
fi
if [ -n "$print_only" ]; then
  echo "$tag"
  exit 0
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir "$ctx/pkgs"
cp "$here/Dockerfile" "$ctx/"
cp "$deb" "$ctx/pkgs/"
if [ -n "$deps" ]; then
  cp "$deps"/*.deb "$ctx/pkgs/"
fi
docker build -q --build-arg "BASE=$base" -t "$tag" "$ctx" >/dev/null \
  || { echo "image: docker build of $tag failed" >&2; exit 1; }
echo "$tag"
