#!/bin/sh
# Engine for the cgroup v2 scenario in the VM: like engine-wrapper.sh, plus a helper that leaves
# the engine's tree the way a /proc walk cannot follow: a double fork (the subshell exits at
# once, so the helper re-parents) and setsid (a session of its own). The helper ignores SIGTERM,
# so only the agent's kill of the cgroup (`cgroup.kill`) ends it.
#   escape-wrapper.sh NODEAGENT PORT MODEL MARKER
nodeagent=$1 port=$2 model=$3 marker=$4
echo "$$" >"$marker"
(setsid sh -c 'trap "" TERM; exec sleep 7777' &)
exec "$nodeagent" simulate --port "$port" --served-model-name "$model" --workers 2 --zero-delay
