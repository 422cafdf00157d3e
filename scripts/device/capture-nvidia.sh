#!/usr/bin/env bash
# Captures real NVIDIA tool outputs on the GPU machine (the `device` tool) for testdata:
# idle, then under a PyTorch matmul load on some GPUs. Writes into $OUT (one tarball).
set -u
out=${OUT:-/tmp/out}; d=$(mktemp -d)
q=index,name,pci.bus_id,memory.total,memory.used,utilization.gpu,temperature.gpu,power.draw
cap() { # name, command...
  local n=$1; shift; "$@" >"$d/$n" 2>"$d/$n.stderr"; echo "$?" >"$d/$n.rc"
}
cap nvidia-smi.idle.txt nvidia-smi
cap nvidia-smi-topo-m.txt nvidia-smi topo -m
cap nvidia-smi-query.idle.csv nvidia-smi --query-gpu=$q --format=csv
cap nvidia-smi-query.noheader.csv nvidia-smi --query-gpu=$q --format=csv,noheader,nounits
cap numactl-hardware.txt numactl --hardware
cap lscpu.txt lscpu
cap nvidia-smi-L.txt nvidia-smi -L
cap lstopo.xml lstopo --of xml
load=$(dirname "$0")/gpu-load.py
python3 "$load" 0 8192 40 20000 & p0=$!
python3 "$load" 1 2048 40 4000 & p1=$!
sleep 20
cap nvidia-smi.load.txt nvidia-smi
cap nvidia-smi-query.load.csv nvidia-smi --query-gpu=$q --format=csv
cap nvidia-smi-apps.load.csv nvidia-smi --query-compute-apps=gpu_bus_id,pid,process_name,used_memory --format=csv
echo "load pids gpu0=$p0 gpu1=$p1" >"$d/load-pids.txt"
wait
cap nvidia-smi-apps.idle.csv nvidia-smi --query-compute-apps=gpu_bus_id,pid,process_name,used_memory --format=csv
# sysfs: nodes and every PCI device's affinity files.
mkdir -p "$d/sysfs"
for f in /sys/devices/system/node/possible /sys/devices/system/node/online /sys/devices/system/node/has_cpu /sys/devices/system/node/has_memory /sys/devices/system/node/node*/cpulist /sys/devices/system/node/node*/distance /sys/devices/system/node/node*/meminfo /sys/bus/pci/devices/*/class /sys/bus/pci/devices/*/vendor /sys/bus/pci/devices/*/device /sys/bus/pci/devices/*/numa_node /sys/bus/pci/devices/*/local_cpulist; do
  [ -r "$f" ] || continue
  real=$(readlink -f "$f"); mkdir -p "$d/sysfs$(dirname "$f")"; cat "$f" >"$d/sysfs$f" 2>/dev/null
done
uname -a >"$d/uname.txt"; nproc >"$d/nproc.txt"
tar -C "$d" -czf "$out/capture.tgz" .
ls -la "$d" | head -50
