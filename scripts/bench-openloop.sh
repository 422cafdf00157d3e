#!/usr/bin/env bash
# verify's open loop: how exactly sends leave at their planned instants (BENCHMARKS.md section
# "verify open-loop precision").
#
# Runs `nodeagent verify --rate R --arrival poisson` against `nodeagent simulate --zero-delay` on
# loopback, at each rate, first with the old wait (hidden `--coarse-timer`: tokio's 1 ms timer
# alone) and then with the exact one (the default), in one run, and prints per run the send lag
# (sent - planned, from requests.jsonl) at p50/p99/max and the share of gaps between consecutive
# sends under 20 us, next to the share among the planned arrival gaps and the Poisson
# expectation 1 - exp(-R * 20 us).
# Usage: scripts/bench-openloop.sh
# Env: BENCH_RATES (default "2000 10000"), BENCH_SECONDS (seconds per run, default 3),
#      NODEAGENT_BIN to use a binary already built (default: a release build).
set -euo pipefail
cd "$(dirname "$0")/.."

RATES=${BENCH_RATES:-2000 10000}
SECS=${BENCH_SECONDS:-3}
BIN=${NODEAGENT_BIN:-target/release/nodeagent}
WORK=$(mktemp -d /tmp/bench-openloop.XXXXXX)
SIM_PID=
cleanup() { [ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT

[ -n "${NODEAGENT_BIN:-}" ] || cargo build --release --locked --quiet

"$BIN" simulate --port 0 --zero-delay --output-len-dist fixed --output-len-mean 4 \
    --max-records 1000 >"$WORK/sim.out" 2>"$WORK/sim.err" &
SIM_PID=$!
for _ in $(seq 100); do grep -q '^listening on ' "$WORK/sim.out" 2>/dev/null && break; sleep 0.1; done
URL=$(sed -n 's/^listening on //p' "$WORK/sim.out")
[ -n "$URL" ] || { echo "simulator did not start: $(cat "$WORK/sim.err")" >&2; exit 1; }

echo "binary: $BIN; simulator: $URL (--zero-delay); ${SECS} s per run, Poisson arrivals, seed 0"
printf '%-7s %-7s %7s %10s %10s %10s %12s %12s %10s\n' \
    rate wait sent 'lag p50' 'lag p99' 'lag max' 'gaps<20us' 'planned<20us' Poisson
for rate in $RATES; do
    n=$(python3 -c "print(int($rate * $SECS))")
    for wait in coarse exact; do
        flag=()
        [ "$wait" = coarse ] && flag=(--coarse-timer)
        out="$WORK/$rate-$wait"
        "$BIN" verify --url "$URL" --dataset random --input-len 16 --output-len 4 \
            --rate "$rate" --arrival poisson --parallel 256 --number "$n" --warmup 256 \
            --quiet --format json --out "$out" "${flag[@]}" >/dev/null 2>"$out.err" \
            || { echo "verify failed at $rate/s ($wait): $(tail -1 "$out.err")" >&2; exit 1; }
        python3 - "$out/requests.jsonl" "$rate" "$wait" <<'PY'
import json, math, sys
path, rate, wait = sys.argv[1], float(sys.argv[2]), sys.argv[3]
recs = [r for r in map(json.loads, open(path)) if not r["warmup"]]
lag = sorted(r["sent_s"] - r["scheduled_s"] for r in recs)
q = lambda p: lag[min(len(lag) - 1, int(p * len(lag)))]
def under(times):
    t = sorted(times)
    gaps = [b - a for a, b in zip(t, t[1:])]
    return 100.0 * sum(g < 20e-6 for g in gaps) / len(gaps)
sent = under(r["sent_s"] for r in recs)
planned = under(r["scheduled_s"] for r in recs)
expect = 100.0 * (1 - math.exp(-rate * 20e-6))
print(f"{rate:<7.0f} {wait:<7} {len(recs):>7} {q(0.5)*1e6:>8.0f}us {q(0.99)*1e6:>8.0f}us "
      f"{lag[-1]*1e6:>8.0f}us {sent:>11.1f}% {planned:>11.1f}% {expect:>9.1f}%")
PY
    done
done
