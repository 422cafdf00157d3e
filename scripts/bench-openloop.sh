#!/usr/bin/env bash
# verify's open loop: how exactly sends leave at their planned instants, and what the pacing
# costs (BENCHMARKS.md section "verify open-loop precision").
#
# Runs `nodeagent verify --rate R --arrival A` against `nodeagent simulate --zero-delay` on
# loopback, at each rate and arrival process, once per wait (hidden `--pacing`), side by side in
# one run: `exact` (the default: a timerfd until 50 us before the instant, then a yield-spin),
# `spin` (tokio's timer until 2 ms before the instant, then a yield-spin)
# and `coarse` (tokio's 1 ms timer alone); a `-rt` suffix adds `verify --realtime` (SCHED_FIFO:
# root or CAP_SYS_NICE). Per run, from requests.jsonl: the send lag (sent - planned) at
# p50/p99/max; the share of gaps between consecutive sends under 20 us, next to the share among
# the planned gaps and the process's expectation (Poisson: 1 - exp(-R * 20 us); constant: 0);
# the sent gaps' p1 and p99 (constant: both should be 1/R); for Poisson, the Kolmogorov-Smirnov
# distance of the sent gaps from Exp(R), next to the planned gaps' distance and the 5 % critical
# value 1.36/sqrt(n) (sent gaps "distributed as Poisson" when under it); and the client's CPU
# time (user + system of the verify process, warmup and start-up included) per 1000 sends.
# First, the platform's own wake-up floor (below). Usage: scripts/bench-openloop.sh
# Env: BENCH_RATES (default "2000 5000 10000"), BENCH_ARRIVALS (default "poisson constant"),
#      BENCH_SECONDS (seconds per run, default 3), BENCH_WAITS (default
#      "exact exact-rt spin coarse"), NODEAGENT_BIN to use a binary
#      already built (default: a release build), BENCH_SIM_CPUS to run the simulator on those CPUs
#      only (`taskset -c`; verify then pins itself to the CPUs it leaves free, as it does beside a
#      bound engine: docs/verify-and-compare.md "The load generator keeps off the engine's CPUs").
set -euo pipefail
cd "$(dirname "$0")/.."

RATES=${BENCH_RATES:-2000 5000 10000}
ARRIVALS=${BENCH_ARRIVALS:-poisson constant}
SECS=${BENCH_SECONDS:-3}
WAITS=${BENCH_WAITS:-exact exact-rt spin coarse}
BIN=${NODEAGENT_BIN:-target/release/nodeagent}
SIM_CPUS=${BENCH_SIM_CPUS:-}
WORK=$(mktemp -d /tmp/bench-openloop.XXXXXX)
SIM_PID=
cleanup() { [ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT
# cpu_time FILE CMD...: runs CMD and writes its user and system CPU seconds (children included)
# to FILE (python's rusage: /usr/bin/time is not installed everywhere, e.g. the GPU machine).
cpu_time() {
    python3 -c 'import resource, subprocess, sys
rc = subprocess.call(sys.argv[2:])
u = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write(f"{u.ru_utime} {u.ru_stime}\n")
sys.exit(rc)' "$@"
}

[ -n "${NODEAGENT_BIN:-}" ] || cargo build --release --locked --quiet

${SIM_CPUS:+taskset -c "$SIM_CPUS"} "$BIN" simulate --port 0 --zero-delay --output-len-dist fixed --output-len-mean 4 \
    --max-records 1000 >"$WORK/sim.out" 2>"$WORK/sim.err" &
SIM_PID=$!
for _ in $(seq 100); do grep -q '^listening on ' "$WORK/sim.out" 2>/dev/null && break; sleep 0.1; done
URL=$(sed -n 's/^listening on //p' "$WORK/sim.out")
[ -n "$URL" ] || { echo "simulator did not start: $(cat "$WORK/sim.err")" >&2; exit 1; }

echo "binary: $BIN; simulator: $URL (--zero-delay, cpus ${SIM_CPUS:-all}); ${SECS} s per run, seed 0; $(nproc) cpus"
echo "load before: $(uptime)"
# The platform's own floor: how late a SCHED_FIFO thread that does nothing else wakes from a
# 100 us sleep on each CPU (cyclictest from rt-tests when installed, else a Python loop whose
# figures include the interpreter's few microseconds). No pacer beats it: a send is a wake-up
# plus the work of the send.
if command -v cyclictest >/dev/null; then
    cyclictest -m -p 80 -i 100 -l 20000 -t "$(nproc)" -a "0-$(($(nproc) - 1))" -q -h 20000 \
        >"$WORK/cyclictest.txt" 2>/dev/null || true
    python3 - "$WORK/cyclictest.txt" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
rows = [l.split() for l in text.splitlines() if re.match(r"^\d", l)]
maxes = next((l.split()[3:] for l in text.splitlines() if l.startswith("# Max Latencies")), [])
for c in range(1, len(rows[0]) if rows else 1):
    tot = sum(int(r[c]) for r in rows)
    acc, res = 0, {}
    for r in rows:
        acc += int(r[c])
        for p in (0.5, 0.99, 0.999):
            if p not in res and acc >= p * tot:
                res[p] = int(r[0])
    mx = int(maxes[c - 1]) if c - 1 < len(maxes) else float("nan")
    print(f"platform floor (cyclictest, SCHED_FIFO 80, cpu {c - 1}, {tot} wake-ups): "
          f"p50 {res.get(0.5)}us p99 {res.get(0.99)}us p99.9 {res.get(0.999)}us max {mx}us")
PY
else
    floor_py='import sys, time
n, lat = 20000, []
for _ in range(n):
    t = time.monotonic_ns(); time.sleep(100e-6); lat.append(time.monotonic_ns() - t - 100_000)
lat.sort(); q = lambda p: lat[min(n - 1, int(p * n))] // 1000
print(f"platform floor (python sleep loop, {sys.argv[1]}, {n} wake-ups, no cyclictest): p50 {q(0.5)}us "
      f"p99 {q(0.99)}us p99.9 {q(0.999)}us max {lat[-1] // 1000}us")'
    chrt -f 80 python3 -c "$floor_py" "SCHED_FIFO 80" 2>/dev/null \
        || python3 -c "$floor_py" "normal priority: chrt refused"
fi
printf '%-6s %-8s %-10s %6s %9s %9s %9s %10s %10s %7s %8s %8s %8s %8s %8s %10s\n' \
    rate arrival wait sent 'lag p50' 'lag p99' 'lag max' 'gaps<20us' 'plan<20us' expect \
    'gap p1' 'gap p99' 'KS sent' 'KS plan' 'KS crit' 'CPU/1000'
for rate in $RATES; do
  n=$(python3 -c "print(int($rate * $SECS))")
  for arrival in $ARRIVALS; do
    for wait in $WAITS; do
        out="$WORK/$rate-$arrival-$wait"
        warmup=256
        prio=()
        pacing=${wait%-rt}
        [ "$pacing" != "$wait" ] && prio=(--realtime)
        cpu_time "$out.time" \
            "$BIN" verify --url "$URL" --dataset random --input-len 16 --output-len 4 \
            --rate "$rate" --arrival "$arrival" --parallel 256 --number "$n" --warmup "$warmup" \
            --quiet --format json --out "$out" --pacing "$pacing" "${prio[@]}" >/dev/null 2>"$out.err" \
            || { echo "verify failed at $rate/s ($wait): $(tail -1 "$out.err")" >&2; exit 1; }
        python3 - "$out/requests.jsonl" "$rate" "$wait" "$out.time" "$warmup" "$arrival" <<'PY'
import json, math, sys
path, rate, wait, timefile, warmup, arrival = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6]
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
poisson = arrival == "poisson"
expect = 100.0 * (1 - math.exp(-rate * 20e-6)) if poisson else (100.0 if 1 / rate < 20e-6 else 0.0)
sg = sorted(sent)
gq = lambda p: sg[min(len(sg) - 1, int(p * len(sg)))]
ks_cols = (f"{ks(sent):>8.4f} {ks(planned):>8.4f} {1.36/math.sqrt(len(sent)):>8.4f}" if poisson
           else f"{'-':>8} {'-':>8} {'-':>8}")
user, sys_ = map(float, open(timefile).read().split()[-2:])
cpu = (user + sys_) / (len(recs) + warmup) * 1000 * 1000
print(f"{rate:<6.0f} {arrival:<8} {wait:<10} {len(recs):>6} {q(0.5)*1e6:>7.0f}us {q(0.99)*1e6:>7.0f}us "
      f"{lag[-1]*1e6:>7.0f}us {under(sent):>9.1f}% {under(planned):>9.1f}% {expect:>6.1f}% "
      f"{gq(0.01)*1e6:>6.0f}us {gq(0.99)*1e6:>6.0f}us {ks_cols} {cpu:>7.0f}ms")
PY
    done
  done
done
echo "load after: $(uptime)"
