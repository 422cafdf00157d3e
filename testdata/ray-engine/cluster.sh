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
# Ray 2.60 turns token authentication on for `ray.init()` clusters and the driver then asks
# `ray start`'s GCS for a token it never set: a driver that cannot join. Off for both sides here.
export RAY_AUTH_MODE=disabled
"$bin/ray" start --head --block --port "$gcs" --num-cpus 1 --object-store-memory $((80 * 1024 * 1024)) \
    --temp-dir "$temp" --include-dashboard true --dashboard-port "$dash" --disable-usage-stats &
for _ in $(seq 1 120); do
    "$py" -c 'import sys, socket; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' "$gcs" 2>/dev/null && break
    sleep 0.5
done
exec "$py" "$(dirname "$0")/engine.py" --address "127.0.0.1:$gcs" "$@"
