#!/usr/bin/env bash
# monitor: the agent's CPU per GPU sample (BENCHMARKS.md's section of the same name). The whole
# loop (sample, parse, attribution against the real /proc tree, checks, status, JSON per tick)
# over TICKS+1 ticks minus a 1-tick run, from the seed's 4-GPU mx-smi table: once through the
# fake mx-smi (a tool process per tick), once from a snapshot file (no process).
# Usage: scripts/bench-monitor.sh [BINARY] [TICKS]   (prints "user sys wall maxrss_kb" per run)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug/nodeagent}
ticks=${2:-200}
D=$(mktemp -d); trap 'rm -rf "$D"' EXIT
cp testdata/mx-smi/seed-mx-smi.load.qwen72b.txt "$D/1.txt"
for count in $((ticks + 1)) 1; do
  echo "fake mx-smi, $count tick(s): $(FAKE_MXSMI_DIR=$D /usr/bin/time -f "%U %S %e %M" "$bin" monitor \
    --tool metax --mx-smi testdata/fake-tools/mx-smi --interval 10ms --count "$count" --json \
    --engine-pid 1 2>&1 >/dev/null | tail -1)"
  echo "snapshot,   $count tick(s): $(/usr/bin/time -f "%U %S %e %M" "$bin" monitor \
    --from testdata/monitor/seed-load --interval 10ms --count "$count" --json \
    --engine-pid 1 2>&1 >/dev/null | tail -1)"
done
