# Scenario for per-rank binding (two-node-two-gpu VM; tests/vm.rs,
# two_node_vm_binds_each_rank_worker_to_its_gpus_node): one instance of the two GPU-class
# devices, 0000:21:01.0 on node 0 and 0000:41:01.0 on node 1, so the plan gives it two ranks;
# serve plans from a `probe --save` snapshot of the VM (the fake tool answers no status table).
# The engine is the simulator with two workers holding 64 MiB each; the fake nvidia-smi
# (testdata/fake-tools, at /nvidia-smi) lists no process until both workers run, then worker 1
# on the node-0 GPU and worker 2 on the node-1 GPU. Served in bare mode, then numactl mode, on
# pure cgroup v2 (cpuset delegated). Collects facts; tests/vm.rs judges them.
. /lib.sh

mount -t cgroup2 none /sys/fs/cgroup
echo "+cpuset +memory +cpu +pids" >/sys/fs/cgroup/cgroup.subtree_control
gpus="--gpu-pci 0000:21:01.0 --gpu-pci 0000:41:01.0"
section plan-json nodeagent plan --json $gpus --tp 2
# serve plans from a snapshot of this VM taken without the GPU tool: the fake nvidia-smi below
# answers only the process-table queries the binder and the occupancy preflight make, not the
# status table live probing would ask it for.
mkdir -p /tmp/snap
section probe-save nodeagent probe $gpus --save /tmp/snap

export FAKE_NVSMI_DIR=/tmp/nvsmi
mkdir -p $FAKE_NVSMI_DIR
cat >$FAKE_NVSMI_DIR/nvidia-smi-query.csv <<CSV
index, name, pci.bus_id, memory.total [MiB], memory.used [MiB], utilization.gpu [%], temperature.gpu, power.draw [W]
0, NVIDIA H100 80GB HBM3, 00000000:21:01.0, 81559 MiB, 0 MiB, 0 %, 31, 69.45 W
1, NVIDIA H100 80GB HBM3, 00000000:41:01.0, 81559 MiB, 0 MiB, 0 %, 31, 69.45 W
CSV

# workers_up: both simulator workers run (comm sim::Worker_TP1 and _TP2; the simulator itself is
# 0); their pids in $w0 and $w1. One pass over /proc with the shell's own `read`: with a `cat`
# per process, twice per poll, this wait took 35-55 s under emulation, now 16-18 s.
workers_up() {
  w0=
  w1=
  for _c in /proc/[0-9]*/comm; do
    read -r _n 2>/dev/null <"$_c" || continue
    _p=${_c#/proc/}
    case $_n in
      sim::Worker_TP1) w0=${_p%/comm} ;;
      sim::Worker_TP2) w1=${_p%/comm} ;;
    esac
  done
  [ -n "$w0" ] && [ -n "$w1" ]
}

# ranks_bound STATE_DIR: `status` shows two ranks with their cgroup.
ranks_bound() {
  nodeagent status --state-dir $1 --json >$1/status.json 2>/dev/null
  [ "$(grep -c '"cgroup": "/' $1/status.json)" -ge 2 ]
}

# ranks_run NAME MODE: serve, wait for both workers, list them on their GPUs, wait until both
# ranks are bound and hold their memory, collect, stop.
ranks_run() {
  dir=/run/r-$1
  mkdir -p $dir
  echo "gpu_bus_id, pid, process_name, used_gpu_memory [MiB]" >$FAKE_NVSMI_DIR/nvidia-smi-apps.csv
  cat >/tmp/r-$1.toml <<CFG
host = "local"
model = "sim"
state_dir = "$dir"

[engine]
argv = ["/bin/sh", "/placement-wrapper.sh", "{self}", "{port}", "{served_model_name}"]
port = 8000

[launch]
tp = 2

[binding]
auto = true

[supervise]
ready_timeout = "240s"
binding_check_interval = "1s"
stop_grace = "10s"
restart_budget = 0
CFG
  agent_start $dir/serve --config /tmp/r-$1.toml --mode $2 --from /tmp/snap --nvidia-smi /nvidia-smi --skip-link-check
  _agent=$agent
  poll 120 $_agent workers_up
  {
    echo "gpu_bus_id, pid, process_name, used_gpu_memory [MiB]"
    echo "00000000:21:01.0, $w0, ray::RayWorkerWrapper, 1024 MiB"
    echo "00000000:41:01.0, $w1, ray::RayWorkerWrapper, 1024 MiB"
  } >$FAKE_NVSMI_DIR/nvidia-smi-apps.csv.new
  section_sh "$1-workers" "echo w0=$w0 w1=$w1; cat $dir/serve.err >&2"
  mv $FAKE_NVSMI_DIR/nvidia-smi-apps.csv.new $FAKE_NVSMI_DIR/nvidia-smi-apps.csv
  # Until `status` shows both ranks with their cgroup and no problem.
  poll 60 $_agent ranks_bound $dir
  # Two more binding checks: the memory figures follow the migration.
  sleep 3
  section "$1-status" nodeagent status --state-dir $dir --json
  section "$1-status-text" nodeagent status --state-dir $dir
  for r in 0 1; do
    eval "w=\$w$r"
    # The worker's pages per node: all of them, and those of mappings of no file (heap, the
    # memory it touched); the mappings with pages off its node on stderr.
    section_sh "$1-worker-$r" ". /lib.sh; proc_binding $w; echo \"cgroup: \$(cat /proc/$w/cgroup)\"
      awk '{f = \$0 ~ / file=/; for (i = 3; i <= NF; i++) if (\$i ~ /^N[0-9]+=/) {split(substr(\$i, 2), a, \"=\"); n[a[1]] += a[2]; if (!f) m[a[1]] += a[2]}}
        END {for (k in n) print \"pages_on_node\" k \": \" n[k]; for (k in m) print \"anon_pages_on_node\" k \": \" m[k]}' /proc/$w/numa_maps
      grep ' N$((1 - r))=' /proc/$w/numa_maps >&2; true"
  done
  section_sh "$1-engine-cgroup" "cg=\$(dirname \$(sed -n 's/^0::\(.*\)/\1/p' /proc/$w0/cgroup)); echo \"engine: \$cg\"; ls /sys/fs/cgroup\$cg; for c in rank-0 rank-1 main; do echo \"\$c procs: \$(cat /sys/fs/cgroup\$cg/\$c/cgroup.procs | tr '\\n' ' ')\"; echo \"\$c cpus: \$(cat /sys/fs/cgroup\$cg/\$c/cpuset.cpus)\"; echo \"\$c mems: \$(cat /sys/fs/cgroup\$cg/\$c/cpuset.mems)\"; done"
  agent_stop $_agent
  section_sh "$1-stop" "echo serve-exit=$agent_rc; . /lib.sh; engine_leftovers; cat $dir/serve.err >&2"
}

ranks_run bare bare
ranks_run numactl numactl
