#!/bin/sh
# Engine for the serve scenarios in the VM: like a vLLM launch script, a shell that starts a
# helper of its own (a grandchild of the agent) and then the engine simulator with two worker
# processes (its children, each in its own session like Ray workers), and waits for it.
#   engine-wrapper.sh NODEAGENT PORT MODEL MARKER
# MARKER is created first: the negative scenarios check that it never appears.
nodeagent=$1 port=$2 model=$3 marker=$4
echo "$$" >"$marker"
sleep 3600 &
helper=$!
"$nodeagent" simulate --port "$port" --served-model-name "$model" --workers 2 --zero-delay &
sim=$!
trap 'kill -TERM $sim $helper 2>/dev/null' TERM INT
wait $sim
rc=$?
kill -TERM $helper 2>/dev/null
exit $rc
