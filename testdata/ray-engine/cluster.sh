#!/usr/bin/env bash
# The engine started the way multi-node vLLM is: `ray start --head --block` first (Ray's own
# daemons: gcs_server, raylet, dashboard, log monitor, in process trees of their own), then the
# driver joins that cluster (engine.py --address). Used as the engine argv by tests/ray.rs:
#   cluster.sh RAY_PYTHON TEMP_DIR GCS_PORT DASHBOARD_PORT -- ENGINE_ARGS...
# The driver is exec'ed, so it is the agent's main process; `ray start` stays behind it.
set -euo pipefail
py=$1 temp=$2 gcs=$3 dash=$4
shift 4
[ "${1:-}" = -- ] && shift
bin=$(dirname "$py")
export RAY_USAGE_STATS_ENABLED=0
# With Ray 2.60's token authentication on, the GCS of this `ray start` refused the driver
# (InvalidAuthToken) and the engine never came up: off for both sides here.
export RAY_AUTH_MODE=disabled
mkdir -p "$temp"
# Its output to a file too: "Ray runtime started." there says the raylet takes drivers (the GCS
# port alone opens earlier, and a driver that comes too soon fails to register with the raylet).
"$bin/ray" start --head --block --port "$gcs" --num-cpus 1 --object-store-memory $((80 * 1024 * 1024)) \
    --temp-dir "$temp" --include-dashboard true --dashboard-port "$dash" --disable-usage-stats \
    > >(tee "$temp/ray-start.$$.log" >&2) 2>&1 &
ray_pid=$!
for _ in $(seq 1 480); do
    grep -q "Ray runtime started" "$temp/ray-start.$$.log" 2>/dev/null && break
    # A `ray start` that failed (a port taken, ...) is a failed engine start, not a wait.
    kill -0 "$ray_pid" 2>/dev/null || { echo "cluster.sh: ray start exited" >&2; exit 1; }
    sleep 0.5
done
exec "$py" "$(dirname "$0")/engine.py" --address "127.0.0.1:$gcs" "$@"
