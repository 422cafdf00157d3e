# Scenario for the placement figures of `verify --compare` (two-node VM: node 0 = CPUs 0-1,
# node 1 = CPUs 2-3): the simulator and two workers touching 64 MiB each, measured unbound and
# bound to each node in turn (`auto` needs a GPU the plan finds, which this VM has none of:
# `nodes=1` is what the plan gives for the VM's device on node 1). Prints compare.json, the
# report and one bound sub-run's summary.json; tests/vm.rs judges them.
. /lib.sh

{
  echo 'host = "local"'
  echo 'model = "sim"'
  echo 'state_dir = "/run/cmp"'
  echo '[engine]'
  echo 'argv = ["/bin/sh", "/placement-wrapper.sh", "{self}", "{port}", "{served_model_name}"]'
  echo 'port = 8000'
  echo '[supervise]'
  echo 'ready_timeout = "240s"'
  echo 'stop_grace = "10s"'
} >/tmp/cmp.toml
mkdir -p /run/cmp

# Enough requests that the sweep outlasts the workers' first touch of their memory.
section compare nodeagent verify --compare none,nodes=0,nodes=1 --trials 1 --config /tmp/cmp.toml \
  --mode bare --out /tmp/cmp --dataset random --input-len 16 --output-len 16 --parallel 2 \
  --number 40 --warmup 2 --quiet
section compare-json cat /tmp/cmp/compare.json
section_sh node1-summary 'cat /tmp/cmp/nodes=1/trial-1/summary.json || ls -R /tmp/cmp >&2'
