#!/bin/sh
# Capacity of the simulator's zero-delay mode, measured with wrk: the figures in BENCHMARKS.md
# ("simulate: the zero-delay server"). The simulator runs on CPU 1, wrk on CPU 0, side by side
# in one run: a streamed chat completion of 16 content chunks + usage (the load client's
# benchmark workload), the same not streamed, and GET /health as the HTTP floor.
#
#   cargo build --release && scripts/bench-sim.sh [SECONDS] [CONNECTIONS]
set -eu
secs=${1:-10}
conns=${2:-300}
bin=${NODEAGENT:-target/release/nodeagent}
dir=$(mktemp -d)
trap 'kill "$sim" 2>/dev/null || true; rm -rf "$dir"' EXIT

taskset -c 1 "$bin" simulate --port 0 --zero-delay --max-records 1000 >"$dir/out" 2>/dev/null &
sim=$!
for _ in $(seq 50); do [ -s "$dir/out" ] && break; sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$dir/out")

body() {
    printf 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
    printf 'wrk.body = [[{"model":"qwen2.5","messages":[{"role":"user","content":"hello there"}],"max_tokens":16,"stream":%s,"stream_options":{"include_usage":true}}]]\n' "$1"
}
body true >"$dir/stream.lua"
body false >"$dir/plain.lua"

# CPU time (user + system) the simulator spent, in clock ticks: per request it is a figure a
# busy shared machine disturbs far less than req/s.
cpu() { awk '{print $14 + $15}' "/proc/$sim/stat"; }
hz=$(getconf CLK_TCK)

run() {
    before=$(cpu)
    out=$(taskset -c 0 wrk -t1 -c"$conns" -d"${secs}s" ${3:+-s "$3"} "$url$2")
    after=$(cpu)
    echo "$out" | awk -v name="$1" -v ticks=$((after - before)) -v hz="$hz" '
        / requests in / {n=$1}
        /Requests\/sec/ {rps=$2}
        /Non-2xx|Socket errors/ {err=err"; "$0}
        END {printf "%-34s %9s req/s  %6.1f us CPU/request%s\n", name":", rps, ticks * 1e6 / hz / n, err}'
}
run "chat stream, 16 chunks + usage" /v1/chat/completions "$dir/stream.lua"
run "chat, not streamed, 16 tokens" /v1/chat/completions "$dir/plain.lua"
run "GET /health" /health ""
