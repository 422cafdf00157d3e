# Scenario for the four-node VM (tests/vm.rs, two_instances_on_the_four_node_vm): two
# `nodeagent serve --instance N` of one config, the simulator as the engine, the plan at one GPU
# per instance over the two GPU-class PCI devices (0000:41:01.0 on node 1, 0000:81:01.0 on the
# memoryless node 2). `/dev/mxcd` is created so that live probing takes the host for a MetaX
# one (no mx-smi: placement from sysfs) and serve sets MetaX's visibility variables. Collects
# facts; tests/vm.rs judges them.
. /lib.sh

: >/dev/mxcd
gpus="--gpu-pci 0000:41:01.0 --gpu-pci 0000:81:01.0"
section plan-json nodeagent plan --json $gpus --tp 1

cat >/tmp/two.toml <<CFG
host = "local"
model = "sim"
state_dir = "/run/na"

[engine]
argv = ["{self}", "simulate", "--host", "127.0.0.1", "--port", "{port}", "--served-model-name", "{served_model_name}", "--workers", "1", "--seed", "{instance}"]
port = 8000

[launch]
tp = 1

[binding]
auto = true

[supervise]
ready_timeout = "240s"
binding_check_interval = "1s"
stop_grace = "10s"
restart_budget = 0
CFG

for n in 0 1; do
  section "print-config-$n" nodeagent serve --config /tmp/two.toml --instance $n --print-config --json $gpus
done
agent_start /tmp/serve-0 --config /tmp/two.toml --instance 0 $gpus
agent0=$agent
agent_start /tmp/serve-1 --config /tmp/two.toml --instance 1 --mode numactl $gpus
agent1=$agent

# Until each instance says ready (at most 240 s).
poll 240 "" is_ready /run/na --instance 0; echo "ready-0=$?" >/tmp/ready
poll 240 "" is_ready /run/na --instance 1; echo "ready-1=$?" >>/tmp/ready
# One more binding check interval, so each agent's own check covers every engine process.
sleep 2
section ready-flags cat /tmp/ready
section status-all nodeagent status --state-dir /run/na --json --all
section status-text nodeagent status --state-dir /run/na
section_sh state-dirs 'ls -ld /run/na /run/na/1 | awk "{print \$1, \$NF}"; ls /run/na/1'

# Each instance's engine: its environment (visibility variables, the state dir marker), its
# port and every process's binding.
for n in 0 1; do
  agent=$agent0
  [ $n = 1 ] && agent=$agent1
  main=$(echo $(cat /proc/$agent/task/*/children))
  section_sh "engine-$n-environ" "tr '\\0' '\\n' </proc/$main/environ | grep -E '^(CUDA|MACA)_VISIBLE_DEVICES=|^NODEAGENT_ENGINE=' | sort"
  section_sh "engine-$n-cmdline" "tr '\\0' ' ' </proc/$main/cmdline"
  section_sh "engine-$n-tree" ". /lib.sh; for p in \$(descendants $agent); do [ \$p = $agent ] || { proc_binding \$p; echo; }; done"
  # No --out: the run directory's chart (a PNG drawn and deflated by the debug build, twice per
  # sweep) took 108-125 s per verify under emulation, and nothing here reads those files.
  section "verify-$n" nodeagent verify --dataset random --url "http://127.0.0.1:800$n" --input-len 8 --parallel 1 --number 2 --max-tokens 4 --quiet
done

# Stop instance 0: instance 1 goes on serving.
agent_stop $agent0
echo "serve-0-exit=$agent_rc" >/tmp/stop0
sleep 1
section stop-0 cat /tmp/stop0
section after-stop-status nodeagent status --state-dir /run/na --json
section after-stop-health-1 busybox wget -q -O - http://127.0.0.1:8001/health
section_sh after-stop-port-0 'busybox wget -q -O - http://127.0.0.1:8000/health; echo rc=$?'
agent_stop $agent1
echo "serve-1-exit=$agent_rc" >/tmp/stop1
section_sh stop-1 "cat /tmp/stop1; . /lib.sh; engine_leftovers; cat /tmp/serve-1.err >&2"
