#!/bin/sh
# Engine for the placement scenario: the simulator with two workers that each touch and hold
# 64 MiB (`--worker-memory-mb`), standing in for GPU workers' host memory.
#   placement-wrapper.sh NODEAGENT PORT MODEL
exec "$1" simulate --port "$2" --served-model-name "$3" --workers 2 --worker-memory-mb 64 --zero-delay
