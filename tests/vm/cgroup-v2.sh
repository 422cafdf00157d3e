# Scenario for the engine's cgroup on a pure cgroup v2 kernel (run inside the two-node VM by
# /init, after tests/vm/lib.sh): cgroup2 mounted at /sys/fs/cgroup with the memory, cpu and pids
# controllers enabled, `nodeagent serve` with an engine whose helper escapes by double fork +
# setsid and ignores SIGTERM (escape-wrapper.sh). Collects; tests/vm.rs judges.
. /lib.sh

mount -t cgroup2 none /sys/fs/cgroup
echo "+memory +cpu +pids" >/sys/fs/cgroup/cgroup.subtree_control
section_sh cgroup-mount 'grep " /sys/fs/cgroup " /proc/mounts; echo "controllers: $(cat /sys/fs/cgroup/cgroup.subtree_control)"; ls /sys/fs/cgroup'

dir=/run/na-cgroup
mkdir -p $dir
cat >/tmp/serve-cgroup.toml <<CFG
host = "local"
model = "sim"
state_dir = "$dir"

[engine]
argv = ["/bin/sh", "/escape-wrapper.sh", "{self}", "{port}", "{served_model_name}", "$dir/engine-started"]
port = 8000

[supervise]
ready_timeout = "240s"
binding_check_interval = "1s"
stop_grace = "5s"
restart_budget = 0
CFG
agent_start $dir/serve --config /tmp/serve-cgroup.toml
poll 240 $agent is_ready $dir
# Two binding-check intervals: the status carries the cgroup's pids and usage.
sleep 3
section cgroup-status nodeagent status --state-dir $dir --json
cg=$(nodeagent status --state-dir $dir --json | sed -n 's/.*"containment": *"cgroup-v2 \([^"]*\)".*/\1/p')
# Every process in the engine's cgroup, with its command line; the agent's own cgroup.
section_sh cgroup-procs "echo cgroup: $cg; for p in \$(cat $cg/cgroup.procs); do echo \"\$p \$(tr '\\0' ' ' </proc/\$p/cmdline)\"; done"
section_sh agent-cgroup "cat /proc/$agent/cgroup"
agent_stop $agent
sleep 1
section_sh cgroup-stop "echo serve-exit=$agent_rc; . /lib.sh; engine_leftovers
  for c in /proc/[0-9]*/cmdline; do case \$(tr '\\0' ' ' <\$c 2>/dev/null) in 'sleep 7777 ') echo \"leftover helper \$c\" ;; esac; done
  [ -n '$cg' ] && [ -d '$cg' ] && echo cgroup-left=$cg
  cat $dir/serve.err >&2"
