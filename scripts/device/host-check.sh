#!/usr/bin/env bash
# Device run for issue 19 item 1 (and the fleet formats): on a real GPU host, what a user runs
# first: probe (text, JSON, a saved snapshot), plan --tp 1 (text and JSON), doctor (text and
# JSON, with its exit status), plan --format slurm-gres / nfd on the live host (real device
# nodes, hwloc's real cores), and one monitor sample (its source). Nothing is judged here: the
# captures are committed under testdata/captures/<host>/ and read by people and tests.
# Usage on the device: OUT=... bash scripts/device/host-check.sh (NODEAGENT_BIN: the binary,
# default ./.device/nodeagent). Everything lands in $OUT/host-check/.
set -u
B=${NODEAGENT_BIN:-$PWD/.device/nodeagent}
o=${OUT:-/tmp/out}/host-check
mkdir -p "$o"
run() { # run NAME CMD...: stdout to NAME.txt, stderr to NAME.err, exit status to NAME.rc
  local name=$1; shift
  "$@" >"$o/$name.txt" 2>"$o/$name.err"; echo $? >"$o/$name.rc"
}
{ nvidia-smi -L; nvidia-smi --query-gpu=driver_version,pci.bus_id --format=csv,noheader
  nproc; uname -r; numactl --hardware; "$B" --version; } >"$o/host.txt" 2>&1
run probe "$B" probe
run probe-json "$B" probe --json
rm -rf "$o/snapshot"; run probe-save "$B" probe --save "$o/snapshot"
run plan-tp1 "$B" plan --tp 1
run plan-tp1-json "$B" plan --tp 1 --json
run doctor "$B" doctor
run doctor-json "$B" doctor --json
run slurm-gres "$B" plan --format slurm-gres
run nfd "$B" plan --format nfd
run monitor-once "$B" monitor --once --json --tool nvidia
for f in "$o"/*.rc; do printf '%s %s\n' "$(basename "$f" .rc)" "$(cat "$f")"; done | tee "$o/exit-status.txt"
