#!/usr/bin/env bash
# Device run: `nodeagent serve --metrics-port` on a real GPU host (nvidia-smi every second),
# with the engine simulator as the engine, under a PyTorch load on GPU 0.
# 1. 40 s of healthy serving: no restart may happen (the monitor's nvidia-smi children must not
#    count as engine processes), and no GPU sample may go missing.
# 2. The simulator freezes (--freeze-after-ms) with a request running: the progress watchdog
#    must restart it, saying "engine stalled".
# Usage on the device: OUT=... bash scripts/device/serve-watchdogs.sh (binary in .dc/nodeagent).
# PART=1 runs only step 1; STALL_LINE= leaves stall_timeout out (for binaries older than it).
set -u
B=${NODEAGENT_BIN:-$PWD/.dc/nodeagent}; out=${OUT:-/tmp/out}; w=$(mktemp -d); mkdir -p "$out"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
config() { # $1 = extra simulator args (TOML list items)
    cat >"$w/nodeagent.toml" <<TOML
host = "local"
model = "sim"
state_dir = "$w/state"
[engine]
port = $port
argv = ["{self}", "simulate", "--host", "127.0.0.1", "--port", "{port}", "--served-model-name", "{served_model_name}", "--decode-base-ms", "20"$1]
[supervise]
health_interval = "1s"
${STALL_LINE-stall_timeout = "5s"}
stop_grace = "5s"
TOML
}
status() { "$B" status --json --state-dir "$w/state" 2>/dev/null; }
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }

load=""
if python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
    python3 "$(dirname "$0")/gpu-load.py" 0 4096 70 0 &
    load=$!
fi

echo "== 1. healthy serving for 40 s, nvidia-smi sampled every second"
config ""
"$B" serve --config "$w/nodeagent.toml" --metrics-port "$mport" --gpu-interval 1s >"$w/serve1.log" 2>&1 &
agent=$!
for _ in $(seq 60); do [ "$(status | field 'd["state"]' 2>/dev/null)" = ready ] && break; sleep 0.5; done
sleep 40
status >"$out/status1.json"
curl -s "http://127.0.0.1:$mport/metrics" >"$out/metrics1.txt"
kill -TERM $agent; wait $agent; echo "serve exit $?"
python3 - "$out/status1.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
m = s["monitor"]
print(f"state {s['state']}, restarts {s['restarts']}, last_exit {s.get('last_exit')}")
print(f"monitor: {m['samples_total']} samples, {m['samples_missing_total']} missing, gpus {len(m['gpus'])}, sampler {m['sampler']}")
assert s["restarts"] == 0, "a restart while healthy"
assert m["samples_missing_total"] == 0, m["missing"]
assert m["samples_total"] >= 30 and len(m["gpus"]) >= 1
print("PASS 1")
PY

[ "${PART:-}" = 1 ] && { [ -n "$load" ] && kill $load; exit 0; }
echo "== 2. the engine freezes with a request running"
config ', "--freeze-after-ms", "4000"'
"$B" serve --config "$w/nodeagent.toml" --metrics-port "$mport" --gpu-interval 1s >"$w/serve2.log" 2>&1 &
agent=$!
for _ in $(seq 60); do [ "$(status | field 'd["state"]' 2>/dev/null)" = ready ] && break; sleep 0.5; done
curl -sN "http://127.0.0.1:$port/v1/chat/completions" -H 'content-type: application/json' \
    -d '{"model":"qwen2.5","messages":[{"role":"user","content":"hi"}],"max_tokens":20000,"ignore_eos":true,"stream":true}' \
    >/dev/null 2>&1 &
for _ in $(seq 60); do [ "$(status | field 'd["restarts"]' 2>/dev/null)" -ge 1 ] 2>/dev/null && break; sleep 0.5; done
status >"$out/status2.json"
kill -TERM $agent; wait $agent; echo "serve exit $?"
python3 - "$out/status2.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"restarts {s['restarts']}, last_exit: {s.get('last_exit')}")
assert s["restarts"] >= 1 and "engine stalled" in (s.get("last_exit") or "")
print("PASS 2")
PY
[ -n "$load" ] && wait $load
cp "$w"/serve*.log "$out/"
grep -E "WARN|ERROR|restart|stalled" "$w"/serve*.log | head -20
