#!/usr/bin/env bash
# Device run: probe --save, plan, monitor under a real GPU load next to nvidia-smi.
set -u
B=$PWD/.dc/nodeagent; out=${OUT:-/tmp/out}; w=$(mktemp -d)
export RUST_LOG=info
{ time $B probe --save $w/snap ; } >$w/probe.txt 2>&1; echo "probe rc=$?" >>$w/probe.txt
$B probe --json >$w/probe.json 2>>$w/probe.txt
$B plan >$w/plan.txt 2>&1; echo "plan rc=$?" >>$w/plan.txt
$B plan --json >$w/plan.json 2>>$w/plan.txt
$B plan --from $w/snap --json >$w/plan-replay.json 2>>$w/plan.txt
TIMEFORMAT="%R s wall %U user %S sys"
for i in 1 2 3 4 5; do { time $B probe >/dev/null 2>/dev/null; } 2>>$w/probe-times.txt; done
for i in 1 2 3 4 5; do echo topo >>$w/probe-times.txt; { time nvidia-smi topo -m >/dev/null; } 2>>$w/probe-times.txt; echo query >>$w/probe-times.txt; { time nvidia-smi --query-gpu=index,name,pci.bus_id,memory.total,memory.used,utilization.gpu,temperature.gpu,power.draw --format=csv >/dev/null; } 2>>$w/probe-times.txt; echo numactl >>$w/probe-times.txt; { time numactl --hardware >/dev/null; } 2>>$w/probe-times.txt; done
for i in 1 2 3; do $B probe --timings >/dev/null 2>>$w/probe-times.txt; $B probe --timings --no-hwloc >/dev/null 2>>$w/probe-times.txt; done
load=$(dirname "$0")/gpu-load.py
python3 "$load" 0 8192 45 30000 & p0=$!
python3 "$load" 1 1024 45 2000 & p1=$!
sleep 20
echo "load pids $p0 $p1" > $w/monitor.txt
for i in 1 2 3; do
  nvidia-smi --query-gpu=index,memory.used,utilization.gpu --format=csv >>$w/monitor.txt 2>&1
  $B monitor --once --json >>$w/monitor.txt 2>&1; echo "monitor rc=$?" >>$w/monitor.txt
  nvidia-smi --query-compute-apps=gpu_bus_id,pid,process_name,used_memory --format=csv >>$w/monitor.txt 2>&1
  sleep 2
done
$B monitor --once >>$w/monitor.txt 2>&1
wait
tar czf $out/snapshot.tgz -C $w/snap .
cp $w/probe.txt $w/probe.json $w/plan.txt $w/plan.json $w/plan-replay.json $w/monitor.txt $w/probe-times.txt $out/ 2>/dev/null
cat $w/probe.txt $w/plan.txt $w/probe-times.txt; tail -40 $w/monitor.txt
