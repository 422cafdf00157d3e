#!/usr/bin/env bash
# Builds the Debian package nodeagent_<version>-1_<arch>.deb with cargo-deb from an already
# built binary (Cargo.toml's [package.metadata.deb] says what goes where). It stages, into
# target/pkg/, that binary and what the package ships besides it, generated from the binary:
#   bin/nodeagent       the binary, stripped as Debian packages ship it (dh_strip's options)
#   man/*.1.gz          one man page per command (`nodeagent man`, clap_mangen), gzipped
#   completions/        bash, zsh and fish scripts (`nodeagent completions`, clap_complete)
#   systemd/            systemd/nodeagent.service and nodeagent@.service with ExecStart on
#                       /usr/bin/nodeagent (a package must not install into /usr/local)
#
#   pkg/build-deb.sh [--profile release|dev | --bin PATH] [--out DIR] [-- EXTRA cargo-deb ARGS]
# --profile dev packages target/debug/nodeagent, --bin any binary (tests/package.rs passes the
# one cargo built for the tests: no release build; cargo-deb refuses to build the dev profile
# itself, so it only ever packages the staged file); the default is the release binary (`make
# deb` builds it first). Prints the .deb's path.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
profile=release
bin=
out="$root/target/debian"
extra=()
while [ $# -gt 0 ]; do
  case $1 in
    --profile) profile=${2:?--profile needs a value}; shift 2 ;;
    --bin) bin=${2:?--bin needs a value}; shift 2 ;;
    --out) out=${2:?--out needs a value}; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "build-deb: unknown argument $1 (usage: pkg/build-deb.sh [--profile release|dev | --bin PATH] [--out DIR])" >&2; exit 2 ;;
  esac
done
case $profile in
  release) dir=release ;;
  dev) dir=debug ;;
  *) echo "build-deb: --profile must be release or dev, not $profile" >&2; exit 2 ;;
esac

bin=${bin:-$root/target/$dir/nodeagent}
[ -x "$bin" ] || { echo "build-deb: no executable $bin: build it first (cargo build$([ $profile = release ] && echo ' --release') --locked) or name one with --bin" >&2; exit 2; }

cargo_deb=cargo-deb
if ! command -v cargo-deb >/dev/null 2>&1; then
  cargo_deb=/var/cache/nodeagent-test/cargo-deb/bin/cargo-deb
  [ -x "$cargo_deb" ] || { echo "build-deb: cargo-deb not found (scripts/setup.sh test installs it, or: cargo install cargo-deb --locked)" >&2; exit 2; }
fi

gen="$root/target/pkg"
rm -rf "$gen"
mkdir -p "$gen/bin" "$gen/man" "$gen/completions" "$gen/systemd"

# As dh_strip does (lintian: unstripped-binary-or-object otherwise).
strip --remove-section=.comment --remove-section=.note --strip-unneeded -o "$gen/bin/nodeagent" "$bin"

"$bin" man --out "$gen/man" >/dev/null
# -n: no name or time stamp in the gzip header, so the package is reproducible.
gzip -9n "$gen"/man/*.1

"$bin" completions bash >"$gen/completions/nodeagent.bash"
"$bin" completions zsh >"$gen/completions/_nodeagent"
"$bin" completions fish >"$gen/completions/nodeagent.fish"

for unit in nodeagent.service nodeagent@.service; do
  grep -q '^ExecStart=/usr/local/bin/nodeagent ' "$root/systemd/$unit" \
    || { echo "build-deb: systemd/$unit: no 'ExecStart=/usr/local/bin/nodeagent ' line to point at /usr/bin" >&2; exit 1; }
  sed 's|^ExecStart=/usr/local/bin/nodeagent |ExecStart=/usr/bin/nodeagent |' \
    "$root/systemd/$unit" >"$gen/systemd/$unit"
done

mkdir -p "$out"
# --no-build: package the staged files as they are (cargo-deb builds nothing).
cd "$root"
# NODEAGENT_DEB_MAINTAINER="Name <address>" replaces Cargo.toml's placeholder maintainer.
if [ -n "${NODEAGENT_DEB_MAINTAINER:-}" ]; then
  extra=(--maintainer "$NODEAGENT_DEB_MAINTAINER" "${extra[@]}")
fi
"$cargo_deb" --no-build --output "$out" "${extra[@]}" | tail -n 1
