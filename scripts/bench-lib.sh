# Sourced by the bench scripts: the simulator they measure against.
# Needs BIN (the nodeagent binary), WORK (a scratch dir) and SIM_PID (empty at first).

# start_sim [SIMULATE ARGS...]: (re)starts `nodeagent simulate` on a free port with 16-token
# answers; sets SIM_PID and URL, exits 1 when it does not start.
start_sim() {
    [ -n "$SIM_PID" ] && { kill "$SIM_PID"; wait "$SIM_PID" 2>/dev/null || true; }
    "$BIN" simulate --port 0 --output-len-dist fixed --output-len-mean 16 --max-records 200000 "$@" \
        >"$WORK/sim.out" 2>"$WORK/sim.err" &
    SIM_PID=$!
    for _ in $(seq 100); do grep -q '^listening on ' "$WORK/sim.out" 2>/dev/null && break; sleep 0.1; done
    URL=$(sed -n 's/^listening on //p' "$WORK/sim.out")
    [ -n "$URL" ] || { echo "simulator did not start: $(cat "$WORK/sim.err")" >&2; exit 1; }
    # The simulator asks for a backlog of 4096 and says when somaxconn clamps it.
    if grep -q 'backlog clamped' "$WORK/sim.err"; then
        echo "warning: $(grep -m1 'backlog clamped' "$WORK/sim.err")" >&2
    fi
}
