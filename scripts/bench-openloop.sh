#!/usr/bin/env bash
# verify's open loop: how exactly sends leave at their planned instants, and what the pacing
# costs (BENCHMARKS.md section "verify open-loop precision").
#
# Runs `nodeagent verify --rate R --arrival poisson` against `nodeagent simulate --zero-delay` on
# loopback, at each rate, once per wait (hidden `--pacing`): `coarse` (tokio's 1 ms timer alone,
# the old wait), `spin` (tokio's timer until 2 ms before the instant, then a yield-spin: the
# first exact wait) and `exact` (the default: a timerfd until 50 us before, then the spin), in
# one run, and prints per run the send lag (sent - planned, from requests.jsonl) at
# p50/p99/max; the share of gaps between consecutive sends under 20 us, next to the share among
# the planned arrival gaps and the Poisson expectation 1 - exp(-R * 20 us); the Kolmogorov-
# Smirnov distance of the sent gaps from the exponential distribution of rate R (the planned
# gaps' distance and the 5 % critical value 1.36/sqrt(n) beside it: a sent-gap distance under
# the critical value is "distributed as Poisson"); and the client's CPU time (user + system of
# the verify process, warmup and start-up included) per 1000 sends.
# Usage: scripts/bench-openloop.sh
# Env: BENCH_RATES (default "2000 10000"), BENCH_SECONDS (seconds per run, default 3),
#      BENCH_WAITS (default "coarse spin exact exact-rt"; `exact-rt` is the exact wait with
#      `verify --realtime`, the client's thread under SCHED_FIFO (root or CAP_SYS_NICE): on a
#      loaded machine, the difference to `exact` is what preemption of that thread costs),
#      NODEAGENT_BIN to use a binary already built (default: a release build).
set -euo pipefail
cd "$(dirname "$0")/.."

RATES=${BENCH_RATES:-2000 10000}
SECS=${BENCH_SECONDS:-3}
WAITS=${BENCH_WAITS:-coarse spin exact exact-rt}
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
echo "load before: $(uptime)"
printf '%-6s %-10s %6s %9s %9s %9s %10s %10s %8s %8s %8s %8s %10s\n' \
    rate wait sent 'lag p50' 'lag p99' 'lag max' 'gaps<20us' 'plan<20us' Poisson \
    'KS sent' 'KS plan' 'KS crit' 'CPU/1000'
for rate in $RATES; do
    n=$(python3 -c "print(int($rate * $SECS))")
    for wait in $WAITS; do
        out="$WORK/$rate-$wait"
        warmup=256
        prio=()
        pacing=$wait
        [ "$wait" = exact-rt ] && { prio=(--realtime); pacing=exact; }
        /usr/bin/time -f '%U %S' -o "$out.time" \
            "$BIN" verify --url "$URL" --dataset random --input-len 16 --output-len 4 \
            --rate "$rate" --arrival poisson --parallel 256 --number "$n" --warmup "$warmup" \
            --quiet --format json --out "$out" --pacing "$pacing" "${prio[@]}" >/dev/null 2>"$out.err" \
            || { echo "verify failed at $rate/s ($wait): $(tail -1 "$out.err")" >&2; exit 1; }
        python3 - "$out/requests.jsonl" "$rate" "$wait" "$out.time" "$warmup" <<'PY'
import json, math, sys
path, rate, wait, timefile, warmup = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
recs = [r for r in map(json.loads, open(path)) if not r["warmup"]]
lag = sorted(r["sent_s"] - r["scheduled_s"] for r in recs)
q = lambda p: lag[min(len(lag) - 1, int(p * len(lag)))]
def gaps(times):
    t = sorted(times)
    return [b - a for a, b in zip(t, t[1:])]
def under(g):
    return 100.0 * sum(x < 20e-6 for x in g) / len(g)
def ks(g):
    # Kolmogorov-Smirnov distance of the gaps from Exp(rate).
    g = sorted(g)
    n = len(g)
    d = 0.0
    for i, x in enumerate(g):
        f = 1.0 - math.exp(-rate * x)
        d = max(d, abs((i + 1) / n - f), abs(f - i / n))
    return d
sent, planned = gaps(r["sent_s"] for r in recs), gaps(r["scheduled_s"] for r in recs)
expect = 100.0 * (1 - math.exp(-rate * 20e-6))
user, sys_ = map(float, open(timefile).read().split()[-2:])
cpu = (user + sys_) / (len(recs) + warmup) * 1000 * 1000
print(f"{rate:<6.0f} {wait:<10} {len(recs):>6} {q(0.5)*1e6:>7.0f}us {q(0.99)*1e6:>7.0f}us "
      f"{lag[-1]*1e6:>7.0f}us {under(sent):>9.1f}% {under(planned):>9.1f}% {expect:>7.1f}% "
      f"{ks(sent):>8.4f} {ks(planned):>8.4f} {1.36/math.sqrt(len(sent)):>8.4f} {cpu:>7.0f}ms")
PY
    done
done
echo "load after: $(uptime)"
