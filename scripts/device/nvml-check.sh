#!/usr/bin/env bash
# Device run for NVML (docs/gpu-sources.md): on a real NVIDIA host, under a PyTorch load,
# (a) monitor samples through NVML and through nvidia-smi, compared field by field;
# (b) the monitor's CPU cost at 1 s sampling for 60 s, NVML and nvidia-smi side by side;
# (c) `probe` with NVML's provenance;
# (d) `nodeagent serve` in bare mode with a tiny PyTorch engine that reports the GPUs it sees.
# Usage on the device: OUT=... bash nvml-check.sh  (NODEAGENT_BIN: the binary, default
# ./.gpunv/nodeagent; the scripts beside this one). Everything lands in $OUT/nvml-check.tgz,
# the summary also in $OUT/summary.txt.
set -u
here=$(cd "$(dirname "$0")" && pwd)
B=${NODEAGENT_BIN:-$PWD/.gpunv/nodeagent}; out=${OUT:-/tmp/out}; w=$(mktemp -d); mkdir -p "$out"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
S=$w/summary.txt
say() { echo "$*" | tee -a "$S"; }
{ nvidia-smi -L; nvidia-smi --query-gpu=driver_version --format=csv,noheader; nproc; uname -r; "$B" --version; } >"$w/host.txt" 2>&1
say "== host"; cat "$w/host.txt" | tee -a "$S"

python3 "$here/gpu-load.py" 0 8192 110 20000 >"$w/load.log" 2>&1 & load=$!
sleep 12

say "== (a) NVML against nvidia-smi under load, 5 pairs"
mkdir -p "$w/pairs"
hq=index,clocks.current.sm,clocks.current.memory,pstate,clocks_event_reasons.active,pcie.link.gen.current,pcie.link.gen.max,pcie.link.width.current,pcie.link.width.max,ecc.errors.uncorrected.volatile.total
for i in 1 2 3 4 5; do
  "$B" monitor --once --json --tool nvidia >"$w/pairs/nvml.$i.json" 2>"$w/pairs/nvml.$i.err"
  nvidia-smi --query-gpu=$hq --format=csv >"$w/pairs/smi-health.$i.csv" 2>&1
  NODEAGENT_NVML_LIB=off "$B" monitor --once --json --tool nvidia >"$w/pairs/smi.$i.json" 2>"$w/pairs/smi.$i.err"
  sleep 1
done
python3 "$here/nvml-compare.py" "$w/pairs" >"$w/compare.txt" 2>&1; echo "compare rc=$?" >>"$w/compare.txt"
tee -a "$S" <"$w/compare.txt" | tail -3

say "== (b) CPU cost of monitor --interval 1s --count 60, NVML and nvidia-smi side by side"
python3 "$here/cpu-cost.py" \
  nvml "$B monitor --tool nvidia --interval 1s --count 60 --json >$w/mon-nvml.json 2>$w/mon-nvml.err" \
  nvidia-smi "env NODEAGENT_NVML_LIB=off $B monitor --tool nvidia --interval 1s --count 60 --json >$w/mon-smi.json 2>$w/mon-smi.err" \
  >"$w/cpu-cost.jsonl" 2>&1
tee -a "$S" <"$w/cpu-cost.jsonl"
python3 - "$w" <<'PY' | tee -a "$S"
import json, sys
w = sys.argv[1]
for n in ("nvml", "smi"):
    # --json prints one status object per tick; the last one has the counters.
    text = open(f"{w}/mon-{n}.json").read()
    objs, dec, i = [], json.JSONDecoder(), 0
    while i < len(text):
        while i < len(text) and text[i].isspace(): i += 1
        if i >= len(text): break
        o, i = dec.raw_decode(text, i); objs.append(o)
    durs = sorted(o.get("sample_duration_ms") or 0 for o in objs)
    last = objs[-1] if objs else {}
    if not durs:
        print(f"{n}: no ticks"); continue
    print(f"{n}: {len(objs)} ticks, source {last.get('source')}, missing {last.get('samples_missing_total')}, "
          f"sample ms median {durs[len(durs)//2]:.3f} max {durs[-1]:.3f}")
PY

say "== (c) probe with NVML provenance"
"$B" probe >"$w/probe.txt" 2>&1; echo "probe rc=$?" >>"$w/probe.txt"
"$B" probe --json >"$w/probe.json" 2>>"$w/probe.txt"
grep -i -A12 "nvml" "$w/probe.txt" | head -40 | tee -a "$S"
wait $load

say "== (d) serve (bare) with a tiny PyTorch engine: what the CUDA process sees"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$w/nodeagent.toml" <<TOML
host = "local"
model = "sim"
state_dir = "$w/state"
[launch]
mode = "bare"
[binding]
auto = true
[engine]
port = $port
argv = ["python3", "$here/tiny-engine.py", "--port", "{port}", "--served-model-name", "{served_model_name}"]
[supervise]
health_interval = "1s"
stop_grace = "5s"
TOML
"$B" serve --config "$w/nodeagent.toml" --print-config >"$w/serve-print-config.txt" 2>&1
"$B" serve --config "$w/nodeagent.toml" >"$w/serve.log" 2>&1 & agent=$!
for _ in $(seq 120); do
  "$B" status --json --state-dir "$w/state" >"$w/status.json" 2>/dev/null
  grep -q '"state": *"ready"' "$w/status.json" && break; sleep 0.5
done
python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "http://127.0.0.1:$port/seen" >"$w/engine-seen.json" 2>&1
nvidia-smi --query-compute-apps=gpu_bus_id,pid,process_name,used_memory --format=csv >"$w/serve-apps.csv" 2>&1
kill -INT $agent; wait $agent; echo "serve exit $?" >>"$w/serve.log"
grep -E "env:|gpus" "$w/serve-print-config.txt" | tee -a "$S"
grep "tiny-engine sees" "$w/serve.log" | tee -a "$S"
say "engine /seen: $(cat "$w/engine-seen.json")"
say "state: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("state"))' "$w/status.json" 2>&1)"
tail -2 "$w/serve.log" | tee -a "$S"

cp "$S" "$out/summary.txt"
tar -C "$w" -czf "$out/nvml-check.tgz" --exclude=state .
