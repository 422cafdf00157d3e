#!/usr/bin/env bash
# The monitor's instructions per tick with the health readings every tick against every 10 s
# (BENCHMARKS.md "Health cadence"): callgrind counts instructions, so the figures repeat on a
# loaded machine. Builds the fake NVML of tests/fake-nvml (2 GPUs of 2 NVLinks each) and runs
# `monitor --tool nvidia --interval 100ms` under valgrind for 1 and 21 ticks, with --json and
# with the text view, each with NODEAGENT_HEALTH_PERIOD=0s and the default; per tick =
# (21-tick run - 1-tick run) / 20, start-up excluded.
# Usage: scripts/bench-health-cadence.sh (NODEAGENT_BIN: the binary, default a debug build).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
BIN=${NODEAGENT_BIN:-target/debug/nodeagent}
[ -n "${NODEAGENT_BIN:-}" ] || cargo build --locked --quiet
WORK=$(mktemp -d /tmp/bench-health.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cc -shared -fPIC -Wall -Werror -o "$WORK/libnvidia-ml.so.1" tests/fake-nvml/fake_nvml.c
printf 'gpus 2\nnvlinks 2\n' >"$WORK/fake_nvml.conf"

# instructions COUNT PERIOD [--json]: total instructions of a monitor run of COUNT ticks.
instructions() {
    local count=$1 period=$2; shift 2
    local env=(NODEAGENT_NVML_LIB="$WORK/libnvidia-ml.so.1" NO_COLOR=1)
    [ "$period" = default ] || env+=(NODEAGENT_HEALTH_PERIOD="$period")
    env "${env[@]}" valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" \
        "$BIN" monitor --tool nvidia --interval 100ms --count "$count" "$@" \
        >/dev/null 2>"$WORK/vg.err" || { tail -5 "$WORK/vg.err" >&2; exit 1; }
    sed -n 's/^==[0-9]*== Collected : //p' "$WORK/vg.err"
}

printf '%-22s %-10s %18s\n' health output 'instructions/tick'
for period in 0s default; do
    for out in --json text; do
        flag=(); [ "$out" = --json ] && flag=(--json)
        one=$(instructions 1 "$period" "${flag[@]}")
        many=$(instructions 21 "$period" "${flag[@]}")
        printf '%-22s %-10s %18s\n' "$( [ "$period" = 0s ] && echo 'every tick (0s)' || echo 'every 10 s (default)')" \
            "$out" "$(( (many - one) / 20 ))"
    done
done
