#!/usr/bin/env bash
# Device run for issue 16 item 4 (docs/gpu-sources.md "Cadence"): on a real NVIDIA host, under
# a PyTorch load on GPU 0,
# (a) the CPU cost of each NVML call the monitor makes (nvml-calls.py);
# (b) the monitor's CPU cost at 1 s sampling for 60 s, four side by side in one run: NVML with
#     the health readings every 10 s (the default), NVML with them every tick
#     (NODEAGENT_HEALTH_PERIOD=0s, what the monitor did before), NVML with the default but no
#     --json (the text view to /dev/null), and nvidia-smi (NODEAGENT_NVML_LIB=off).
# Usage on the device: OUT=... bash health-cadence.sh (NODEAGENT_BIN: the binary, default
# ./.device/nodeagent; the scripts beside this one). Everything lands in $OUT/health-cadence.tgz,
# the summary also in $OUT/cadence-summary.txt.
set -u
here=$(cd "$(dirname "$0")" && pwd)
B=${NODEAGENT_BIN:-$PWD/.device/nodeagent}; out=${OUT:-/tmp/out}; w=$(mktemp -d); mkdir -p "$out"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
S=$w/cadence-summary.txt
say() { echo "$*" | tee -a "$S"; }
{ date -u; nvidia-smi -L; nvidia-smi --query-gpu=driver_version --format=csv,noheader; nproc; uname -r; "$B" --version; } >"$w/host.txt" 2>&1
say "== host"; tee -a "$S" <"$w/host.txt"

python3 "$here/gpu-load.py" 0 8192 100 20000 >"$w/load.log" 2>&1 & load=$!
sleep 12

say "== (a) CPU cost of each NVML call on GPU 0, under load (500 calls each)"
python3 "$here/nvml-calls.py" 500 >"$w/nvml-calls.jsonl" 2>&1
tee -a "$S" <"$w/nvml-calls.jsonl"

say "== (b) monitor --interval 1s --count 60, four side by side"
M="$B monitor --tool nvidia --interval 1s --count 60"
python3 "$here/cpu-cost.py" \
  nvml-health-10s "$M --json >$w/mon-nvml.json 2>$w/mon-nvml.err" \
  nvml-health-every-tick "env NODEAGENT_HEALTH_PERIOD=0s $M --json >$w/mon-nvml-every.json 2>$w/mon-nvml-every.err" \
  nvml-health-10s-no-json "$M >/dev/null 2>$w/mon-nvml-text.err" \
  nvidia-smi "env NODEAGENT_NVML_LIB=off $M --json >$w/mon-smi.json 2>$w/mon-smi.err" \
  >"$w/cpu-cost.jsonl" 2>&1
tee -a "$S" <"$w/cpu-cost.jsonl"
python3 - "$w" <<'PY' | tee -a "$S"
import json, sys
w = sys.argv[1]
for n in ("nvml", "nvml-every", "smi"):
    text = open(f"{w}/mon-{n}.json").read()
    objs, dec, i = [], json.JSONDecoder(), 0
    while i < len(text):
        while i < len(text) and text[i].isspace(): i += 1
        if i >= len(text): break
        o, i = dec.raw_decode(text, i); objs.append(o)
    durs = sorted(o.get("sample_duration_ms") or 0 for o in objs)
    if not durs:
        print(f"{n}: no ticks"); continue
    fresh = sum(1 for o in objs if o.get("health") and all(not h.get("age_ticks") for h in o["health"]))
    last = objs[-1]
    print(f"{n}: {len(objs)} ticks, source {last.get('source')}, health read on {fresh} ticks, "
          f"missing {last.get('samples_missing_total')}, sample ms median {durs[len(durs)//2]:.3f} max {durs[-1]:.3f}")
PY
wait $load
cp "$S" "$out/cadence-summary.txt"
tar -C "$w" -czf "$out/health-cadence.tgz" .
