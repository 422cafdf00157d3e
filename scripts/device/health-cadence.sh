#!/usr/bin/env bash
# Device run for issue 16 item 4 (docs/gpu-sources.md "Cadence"): on a real NVIDIA host, under
# a PyTorch load on GPU 0,
# (a) the CPU cost of each NVML call the monitor makes (nvml-calls.py);
# (b) the monitor's CPU cost at 1 s sampling for 60 s, four side by side in one run (and each
#     again for 10 ticks beside them, so (c) gives the steady cost per tick without start-up): NVML with
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
M10="$B monitor --tool nvidia --interval 1s --count 10"
python3 "$here/cpu-cost.py" \
  nvml-health-10s "$M --json >$w/mon-nvml.json 2>$w/mon-nvml.err" \
  nvml-health-every-tick "env NODEAGENT_HEALTH_PERIOD=0s $M --json >$w/mon-nvml-every.json 2>$w/mon-nvml-every.err" \
  nvml-health-10s-no-json "$M >/dev/null 2>$w/mon-nvml-text.err" \
  nvidia-smi "env NODEAGENT_NVML_LIB=off $M --json >$w/mon-smi.json 2>$w/mon-smi.err" \
  nvml-health-10s-x10 "$M10 --json >/dev/null 2>&1" \
  nvml-health-every-tick-x10 "env NODEAGENT_HEALTH_PERIOD=0s $M10 --json >/dev/null 2>&1" \
  nvml-health-10s-no-json-x10 "$M10 >/dev/null 2>&1" \
  nvidia-smi-x10 "env NODEAGENT_NVML_LIB=off $M10 --json >/dev/null 2>&1" \
  >"$w/cpu-cost.jsonl" 2>&1
tee -a "$S" <"$w/cpu-cost.jsonl"
say "== (c) steady state: (CPU of 60 ticks - CPU of 10 ticks) / 50, start-up (NVML init) excluded"
python3 - "$w/cpu-cost.jsonl" <<'PY' | tee -a "$S"
import json, sys
runs = {}
for line in open(sys.argv[1]):
    try:
        r = json.loads(line)
    except ValueError:
        continue
    runs[r["name"]] = r
for name in ("nvml-health-10s", "nvml-health-every-tick", "nvml-health-10s-no-json", "nvidia-smi"):
    a, b = runs.get(name), runs.get(name + "-x10")
    if not a or not b:
        print(f"{name}: missing a run"); continue
    per = (a["cpu_s"] - b["cpu_s"]) / 50
    print(f"{name}: {per * 1e3:.3f} ms of CPU per tick = {per * 100:.3f} % of one core at 1 Hz "
          f"(start-up {max(b['cpu_s'] - 10 * per, 0) * 1e3:.0f} ms)")
PY
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
