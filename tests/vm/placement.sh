# Scenario for the memory placement audit (two-node VM): the simulator, its two workers holding
# 64 MiB each, served with memory bound to node 1, to node 0, and unbound; `nodeagent status
# --json` after the audit has seen the workers' memory. tests/vm.rs judges memory_by_node.
. /lib.sh

# placement_config FILE STATE_DIR [CPUS MEM_NODE]: no CPUS/MEM_NODE = unbound.
placement_config() {
  {
    echo 'host = "local"'
    echo 'model = "sim"'
    echo "state_dir = \"$2\""
    echo '[engine]'
    echo 'argv = ["/bin/sh", "/placement-wrapper.sh", "{self}", "{port}", "{served_model_name}"]'
    echo 'port = 8000'
    echo '[binding]'
    echo 'auto = false'
    if [ -n "$3" ]; then
      echo "cpus = \"$3\""
      echo 'mem_policy = "bind"'
      echo "mem_nodes = [$4]"
    fi
    echo '[supervise]'
    echo 'ready_timeout = "240s"'
    echo 'binding_check_interval = "1s"'
    echo 'stop_grace = "10s"'
    echo 'restart_budget = 0'
  } >"$1"
}

# memory_counted STATE_DIR: the audit in `status` counts more than the workers' 128 MiB.
memory_counted() {
  nodeagent status --state-dir "$1" --json >"$1/status.json" 2>/dev/null
  _sum=$(tr -d ' \n' <"$1/status.json" | grep -o '"memory_by_node":{[^}]*}' | grep -o ':[0-9]*' | tr -d : | awk '{s+=$1} END {print s+0}')
  [ "${_sum:-0}" -gt 134217728 ]
}

# placement_run NAME CONFIG STATE_DIR: serve, wait until ready and the audit counts 128 MiB,
# print NAME-status, stop.
placement_run() {
  mkdir -p "$3"
  agent_start "$3/serve" --config "$2" --mode bare
  poll 240 $agent memory_counted "$3"
  sleep 2
  section "$1-status" nodeagent status --state-dir "$3" --json
  section "$1-status-text" nodeagent status --state-dir "$3"
  agent_stop $agent
  section_sh "$1-stop" "echo serve-exit=$agent_rc; cat $3/serve.err >&2"
}

placement_config /tmp/p-node1.toml /run/p-node1 2-3 1
placement_run node1 /tmp/p-node1.toml /run/p-node1
placement_config /tmp/p-node0.toml /run/p-node0 0-1 0
placement_run node0 /tmp/p-node0.toml /run/p-node0
placement_config /tmp/p-unbound.toml /run/p-unbound
placement_run unbound /tmp/p-unbound.toml /run/p-unbound
