"""Compares nodeagent monitor samples read through NVML and through nvidia-smi, field by field.

Usage: python3 nvml-compare.py PAIRS_DIR
  PAIRS_DIR holds nvml.N.json and smi.N.json (`monitor --once --json`, taken back to back) and
  smi-health.N.csv (nvidia-smi's own health query, taken next to nvml.N.json).
Prints a table per pair and a verdict per field; exits 1 if a field disagrees beyond tolerance.
"""
import csv
import glob
import json
import os
import sys

d = sys.argv[1]
# Field, tolerance (absolute), why the tolerance.
FIELDS = [
    ("name", None), ("bus_id", None), ("memory_total_mib", 0), ("memory_used_mib", 64),
    ("utilization_pct", 10), ("temperature_c", 2), ("power_w", 60),
]
bad = 0
n = 0
for nv_path in sorted(glob.glob(os.path.join(d, "nvml.*.json"))):
    i = nv_path.rsplit(".", 2)[1]
    nv = json.load(open(nv_path))
    sm = json.load(open(os.path.join(d, f"smi.{i}.json")))
    n += 1
    print(f"pair {i}: sources {nv.get('source')} / {sm.get('source')}, sample {nv.get('sample_duration_ms')} ms / {sm.get('sample_duration_ms')} ms")
    for g_nv, g_sm in zip(nv["gpus"], sm["gpus"]):
        for f, tol in FIELDS:
            a, b = g_nv.get(f), g_sm.get(f)
            if tol is None:
                ok = a == b
            else:
                ok = a is not None and b is not None and abs(a - b) <= tol
            bad += not ok
            print(f"  gpu {g_nv['index']} {f:18} nvml {a!s:>24}  nvidia-smi {b!s:>24}  {'ok' if ok else 'DIFFERS'}")
    p_nv = sorted((p["gpu"], p["pid"]) for p in nv["processes"])
    p_sm = sorted((p["gpu"], p["pid"]) for p in sm["processes"])
    ok = p_nv == p_sm
    bad += not ok
    print(f"  processes (gpu, pid)  nvml {p_nv}  nvidia-smi {p_sm}  {'ok' if ok else 'DIFFERS'}")
    hp = os.path.join(d, f"smi-health.{i}.csv")
    if os.path.exists(hp):
        rows = list(csv.reader(open(hp), skipinitialspace=True))
        hdr, vals = rows[0], rows[1:]
        for h, row in zip(nv.get("health", []), vals):
            r = dict(zip(hdr, row))
            def num(k):
                v = r.get(k, "").split()[0] if r.get(k) else ""
                try:
                    return int(v, 0)
                except ValueError:
                    return v
            pairs = [
                ("sm_clock_mhz", h.get("sm_clock_mhz"), num("clocks.current.sm [MHz]"), 60),
                ("mem_clock_mhz", h.get("mem_clock_mhz"), num("clocks.current.memory [MHz]"), 0),
                ("performance_state", h.get("performance_state"), int(str(r.get("pstate", "P-1")).strip()[1:] or -1), 0),
                ("throttle_reasons", h.get("throttle_reasons"), num("clocks_event_reasons.active"), None),
                ("pcie.gen", h["pcie"].get("gen"), num("pcie.link.gen.current"), 0),
                ("pcie.gen_max", h["pcie"].get("gen_max"), num("pcie.link.gen.max"), 0),
                ("pcie.width", h["pcie"].get("width"), num("pcie.link.width.current"), 0),
                ("pcie.width_max", h["pcie"].get("width_max"), num("pcie.link.width.max"), 0),
                ("ecc_uncorrected", h.get("ecc_uncorrected"), num("ecc.errors.uncorrected.volatile.total"), 0),
            ]
            for f, a, b, tol in pairs:
                if tol is None:
                    ok = a == b
                else:
                    ok = isinstance(a, int) and isinstance(b, int) and abs(a - b) <= tol
                # Throttle reasons move with the load from one instant to the next: reported, not judged.
                judged = f != "throttle_reasons"
                bad += judged and not ok
                print(f"  gpu {h['index']} {f:18} nvml {a!s:>24}  nvidia-smi {b!s:>24}  {'ok' if ok else ('DIFFERS' if judged else 'moves (not judged)')}")
print(f"{n} pairs compared; {bad} fields disagree beyond tolerance")
sys.exit(1 if bad or n == 0 else 0)
