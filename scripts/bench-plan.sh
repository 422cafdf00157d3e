#!/usr/bin/env bash
# plan and probe: the figures of BENCHMARKS.md's section of the same name.
#   hyperfine over `plan --from` on two snapshots (goal: under 20 ms wall), the tools it would
#   otherwise run for scale, then `probe --timings` on this machine (the tools' time vs ours).
# Usage: scripts/bench-plan.sh [BINARY] [RUNS]   (needs hyperfine: apt-get install hyperfine)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/nodeagent}
runs=${2:-100}
command -v hyperfine >/dev/null || { echo "bench-plan: hyperfine not found (apt-get install hyperfine)" >&2; exit 2; }
[ -x "$bin" ] || cargo build --release --locked --quiet
hyperfine --warmup 5 -N --runs "$runs" \
  "$bin plan --from testdata/hosts/seed-4xmxc500" \
  "$bin plan --from testdata/hosts/seed-4xmxc500 --json" \
  "$bin plan --from testdata/hosts/dgxa100-8gpu --tp 2"
echo "== for scale"
hyperfine --warmup 5 -N --runs "$runs" \
  "cat testdata/hosts/seed-4xmxc500/numactl-hardware.txt" \
  "numactl --hardware" \
  "$bin plan --from testdata/hosts/seed-4xmxc500"
echo "== live probe on this machine, split into the tools' time and ours"
for _ in 1 2 3 4; do "$bin" probe --timings >/dev/null; done
