#!/usr/bin/env bash
# verify: client cost, timing accuracy, memory (BENCHMARKS.md section of the same name).
#
# Runs nodeagent verify, evalscope perf (installed into .cache/evalscope-venv from PyPI if
# missing) and wrk side by side against `nodeagent simulate` on loopback, on this machine, in
# one run, and prints the figures; then aiperf and guidellm the same way
# (scripts/bench-peers.sh) and the open loop's precision (scripts/bench-openloop.sh).
# Usage: scripts/bench-verify.sh
# Env: BENCH_REQUESTS (nodeagent, default 60000: shorter runs are dominated by start-up), BENCH_EVALSCOPE_REQUESTS (default 3000),
#      BENCH_MEMORY_REQUESTS (default 100000), SKIP_EVALSCOPE=1 to leave evalscope out,
#      SKIP_AIPERF=1 / SKIP_GUIDELLM=1 (and BENCH_PEER_REQUESTS) for bench-peers.sh,
#      SKIP_OPENLOOP=1 to leave bench-openloop.sh out,
#      NODEAGENT_BIN to use a binary already built.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${BENCH_REQUESTS:-60000}
NE=${BENCH_EVALSCOPE_REQUESTS:-3000}
NM=${BENCH_MEMORY_REQUESTS:-100000}
C=300
BIN=${NODEAGENT_BIN:-target/release/nodeagent}
VENV=.cache/evalscope-venv
WORK=$(mktemp -d /tmp/bench-verify.XXXXXX)
SIM_PID=
cleanup() { [ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT

[ -n "${NODEAGENT_BIN:-}" ] || cargo build --release --locked --quiet
if [ -z "${SKIP_EVALSCOPE:-}" ] && [ ! -x "$VENV/bin/evalscope" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q 'evalscope[perf]==1.14.1'
fi

# An openqa dataset of 200 short questions.
python3 - "$WORK/qa.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(200):
        f.write(json.dumps({"question": f"question {i}: what does NUMA binding change for GPU serving?"}) + "\n")
PY

# start_sim: scripts/bench-lib.sh.
. scripts/bench-lib.sh

# The kernel's count of connections dropped because a listen queue was full (TcpExt
# ListenOverflows): a client whose SYN is dropped retries a second later, which distorts any
# burst-connecting run without a warmup.
listen_overflows() {
    awk '/^TcpExt:/ { if (!h) { for (i = 1; i <= NF; i++) n[$i] = i; h = 1 } else print $n["ListenOverflows"] }' /proc/net/netstat
}

# Runs a command; prints "wall_s user_s sys_s maxrss_kib" of it (its children included), and
# on stderr how many connections the server's listen queue refused meanwhile.
measure() {
    local before after
    before=$(listen_overflows)
    /usr/bin/time -f '%e %U %S %M' -o "$WORK/time" "$@" >"$WORK/last.out" 2>"$WORK/last.err" || {
        echo "failed: $*" >&2; tail -5 "$WORK/last.err" >&2; exit 1; }
    after=$(listen_overflows)
    if [ "$after" != "$before" ]; then
        echo "warning: $((after - before)) connection(s) refused by a full listen queue during: $1 (clients retried after 1 s; figures distorted)" >&2
    fi
    cat "$WORK/time"
}

verify_args=(--dataset openqa --dataset-path "$WORK/qa.jsonl" --max-tokens 16 --ignore-eos --quiet)

echo "== client cost: zero-delay simulator, 16 content chunks + usage, concurrency $C"
start_sim --zero-delay
read -r wall user sys rss < <(measure "$BIN" verify --url "$URL" "${verify_args[@]}" \
    --parallel $C --number "$N" --warmup $C --out "$WORK/na")
na_qps=$(python3 -c "import json;print(round(json.load(open('$WORK/na/summary.json'))['levels'][0]['qps'],1))")
na_cpu=$(python3 -c "print(round(($user+$sys)/($N+$C)*1000,3))")
printf '%-22s %10s req/s  %8s s CPU/1000 req  %7s MiB max RSS\n' "nodeagent verify" "$na_qps" "$na_cpu" "$((rss/1024))"

cat >"$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"qwen2.5","messages":[{"role":"user","content":"question 1: what does NUMA binding change?"}],"max_tokens":16,"ignore_eos":true,"stream":true,"stream_options":{"include_usage":true}}'
LUA
read -r wall user sys rss < <(measure wrk -t1 -c$C -d10s -s "$WORK/post.lua" "$URL/v1/chat/completions")
wrk_qps=$(awk '/Requests\/sec/ {print $2}' "$WORK/last.out")
wrk_n=$(awk '/requests in/ {print $1}' "$WORK/last.out")
wrk_cpu=$(python3 -c "print(round(($user+$sys)/$wrk_n*1000,3))")
printf '%-22s %10s req/s  %8s s CPU/1000 req  %7s MiB max RSS\n' "wrk (no SSE parsing)" "$wrk_qps" "$wrk_cpu" "$((rss/1024))"

if [ -z "${SKIP_EVALSCOPE:-}" ]; then
    read -r wall user sys rss < <(measure "$VENV/bin/evalscope" perf --url "$URL/v1/chat/completions" \
        --api openai --model qwen2.5 --parallel $C --number "$NE" --dataset openqa \
        --dataset-path "$WORK/qa.jsonl" --max-tokens 16 --stream --outputs-dir "$WORK/es" \
        --extra-args '{"ignore_eos": true}')
    es_sum=$(find "$WORK/es" -name benchmark_summary.json | head -1)
    es_qps=$(python3 -c "import json;d=json.load(open('$es_sum'));print(round(next(v for k,v in d.items() if 'Throughput (req/s)' in k),1))")
    es_cpu=$(python3 -c "print(round(($user+$sys)/$NE*1000,3))")
    printf '%-22s %10s req/s  %8s s CPU/1000 req  %7s MiB max RSS\n' "evalscope perf 1.14.1" "$es_qps" "$es_cpu" "$((rss/1024))"
    python3 -c "print('nodeagent / evalscope = %.1fx' % ($na_qps/$es_qps))"
fi
python3 -c "print('nodeagent / wrk = %.2f' % ($na_qps/$wrk_qps))"

echo
echo "== timing accuracy: simulator TTFT 100 ms, 10 ms per token, concurrency $C"
start_sim --prefill-base-ms 100 --prefill-per-token-ms 0 --decode-base-ms 10 --decode-per-running-ms 0 --max-num-seqs 0
measure "$BIN" verify --url "$URL" "${verify_args[@]}" --parallel $C --number 3000 --warmup $C --out "$WORK/acc" >/dev/null
curl -s "$URL/sim/requests" >"$WORK/truth.json"
python3 - "$WORK/acc/requests.jsonl" "$WORK/truth.json" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
truth = json.load(open(sys.argv[2]))
truth = truth.get("requests", truth) if isinstance(truth, dict) else truth
by_id = {t["request_id"]: t for t in truth}
errs, send, recv = [], [], []
for r in recs:
    t = by_id.get(r["request_id"])
    if r["warmup"] or not t or r["first_token_s"] is None or t.get("first_token_offset_ns") is None:
        continue
    client = r["first_token_s"] - r["sent_s"]
    server = (t["first_token_offset_ns"] - t["arrival_offset_ns"]) / 1e9
    errs.append(abs(client - server))
    # Where the error sits: the two processes' clocks differ by a constant, so the send side
    # (client send -> simulator arrival) is taken relative to its fastest request.
    send.append(t["arrival_offset_ns"] / 1e9 - r["sent_s"])
    recv.append(r["first_token_s"] - t["first_token_offset_ns"] / 1e9)
base = min(send)
send = sorted(x - base for x in send)
recv = sorted(x + base for x in recv)
errs.sort()
q = lambda xs, f: xs[min(len(xs) - 1, int(f * (len(xs) - 1)))] * 1e3
print(f"nodeagent: {len(errs)} requests joined by x-request-id; |client TTFT - simulator TTFT| "
      f"p50 {q(errs, 0.5):.3f} ms, p99 {q(errs, 0.99):.3f} ms, max {errs[-1]*1e3:.3f} ms")
print(f"  of which send side (client send -> simulator arrival) p99 {q(send, 0.99):.3f} ms, "
      f"receive side (simulator write -> client chunk time) p99 {q(recv, 0.99):.3f} ms")
PY
if [ -z "${SKIP_EVALSCOPE:-}" ]; then
    measure "$VENV/bin/evalscope" perf --url "$URL/v1/chat/completions" --api openai --model qwen2.5 \
        --parallel $C --number "$NE" --dataset openqa --dataset-path "$WORK/qa.jsonl" --max-tokens 16 \
        --stream --outputs-dir "$WORK/es-acc" --extra-args '{"ignore_eos": true}' >/dev/null
    curl -s "$URL/sim/requests" >"$WORK/truth2.json"
    python3 - "$WORK/es-acc" "$WORK/truth2.json" <<'PY'
import glob, json, sys
pct = json.load(open(glob.glob(sys.argv[1] + "/**/benchmark_percentile.json", recursive=True)[0]))
truth = json.load(open(sys.argv[2]))
truth = truth.get("requests", truth) if isinstance(truth, dict) else truth
ttfts = sorted((t["first_token_offset_ns"] - t["arrival_offset_ns"]) / 1e9 for t in truth
               if t.get("first_token_offset_ns") is not None)
row = lambda name: next(r for r in pct if r.get("Percentiles") == name)
key = next(k for k in pct[0] if "TTFT" in k)
p = lambda q: ttfts[int(q * (len(ttfts) - 1))]
scale = 1e-3 if "(ms)" in key else 1.0
for name, q in (("50%", 0.5), ("99%", 0.99)):
    es = row(name)[key] * scale
    print(f"evalscope: TTFT {name} reported {es*1e3:.1f} ms vs simulator {p(q)*1e3:.1f} ms: error {(es-p(q))*1e3:.1f} ms")
PY
fi

echo
echo "== memory: $NM requests at concurrency $C (zero-delay simulator)"
start_sim --zero-delay
read -r wall user sys rss < <(measure "$BIN" verify --url "$URL" "${verify_args[@]}" --parallel $C --number "$NM" --out "$WORK/mem")
echo "nodeagent verify: max RSS $((rss/1024)) MiB for $NM requests in ${wall}s (requests.jsonl $(du -m "$WORK/mem/requests.jsonl" | cut -f1) MiB on disk)"
kill "$SIM_PID"; wait "$SIM_PID" 2>/dev/null || true; SIM_PID=
rm -rf "$WORK"

echo
NODEAGENT_BIN=$BIN scripts/bench-peers.sh
if [ -z "${SKIP_OPENLOOP:-}" ]; then
    echo
    echo "== open-loop precision (scripts/bench-openloop.sh)"
    NODEAGENT_BIN=$BIN scripts/bench-openloop.sh
fi
