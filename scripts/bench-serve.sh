#!/usr/bin/env bash
# The agent's own footprint while supervising: runs `nodeagent serve` on the `sim` profile
# (the engine simulator with 2 workers, native binding to CPU 1 / node 0, default health and
# binding-check intervals), waits until ready, then samples the agent's RSS and CPU time
# from /proc over DURATION seconds. Usage: scripts/bench-serve.sh [BINARY] [DURATION]
set -euo pipefail
bin=${1:-target/release/nodeagent}
duration=${2:-60}
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$dir/c.toml" <<TOML
host = "local"
model = "sim"
state_dir = "$dir/state"
[engine]
port = $port
[binding]
cpus = "1"
mem_nodes = [0]
TOML
"$bin" serve --config "$dir/c.toml" 2>"$dir/agent.log" &
agent=$!
trap 'kill $agent 2>/dev/null; wait $agent 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 1 100); do
  "$bin" status --json --state-dir "$dir/state" 2>/dev/null | grep -q '"state": "ready"' && break
  sleep 0.2
done
tck=$(getconf CLK_TCK)
cpu() { awk '{print $14+$15}' /proc/$agent/stat; }
c0=$(cpu); t0=$(date +%s.%N)
peak=0
for _ in $(seq 1 "$duration"); do
  rss=$(awk '/^VmRSS/{print $2}' /proc/$agent/status)
  [ "$rss" -gt "$peak" ] && peak=$rss
  sleep 1
done
c1=$(cpu); t1=$(date +%s.%N)
hwm=$(awk '/^VmHWM/{print $2}' /proc/$agent/status)
echo "binary:           $bin"
echo "engine pids:      $("$bin" status --json --state-dir "$dir/state" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pids"])')"
echo "RSS now / peak:   $((rss / 1024)) MiB / $((hwm / 1024)) MiB (VmHWM)"
python3 -c "print(f'CPU:              {($c1-$c0)/$tck:.2f} s over {$t1-$t0:.0f} s = {100*($c1-$c0)/$tck/($t1-$t0):.3f} % of one core')"
