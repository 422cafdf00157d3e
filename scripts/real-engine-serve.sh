# Sourced by scripts/real-engine-check.sh (needs its BIN, VENV, MODEL, WORK, AGENT_PID):
# `nodeagent serve` supervising the real llama.cpp server (llama-cpp-python, the built-in
# `llama-cpp-python` profile: it has /v1/models but no /health and no /metrics), bound to CPU 1.
#   run A (the profile's argv as is): ready; every engine process inside the binding in /proc;
#     a `nodeagent verify` sweep through it; kill -9 of the server -> restarted ("engine killed
#     by signal 9"); the server SIGSTOPped (no answer to /v1/models) -> restarted ("engine hung:
#     3 failed health checks"); SIGTERM -> exit 0, no process left.
#   run B (the same server with its disk prompt cache, `--cache True --cache_type disk`, and the
#     canary on): the cache directory replaced by a file, as a broken disk would leave it: the
#     real server answers every completion 500 (NotADirectoryError) while /v1/models answers
#     200; the canary restarts it ("engine fails completions: 3 canary completion(s) in a row
#     failed, last: HTTP 500"); SIGTERM -> nothing left.

SERVE="$WORK/serve"
mkdir -p "$SERVE"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# serve_start EXTRA_ENGINE_TOML EXTRA_SUPERVISE_TOML: a config on the llama-cpp-python profile,
# then `nodeagent serve` in the background (python3 = the venv's, through PATH).
serve_start() {
    SPORT=$(free_port)
    rm -rf "$SERVE/state"
    cat >"$SERVE/nodeagent.toml" <<EOF
host = "local"
model = "llama-cpp-python"
state_dir = "$SERVE/state"

[engine]
port = $SPORT
model_path = "$MODEL"
served_model_name = "smollm2-135m"
workdir = "$SERVE"
$1

[binding]
cpus = "1"

[supervise]
health_interval = "500ms"
health_timeout = "2s"
health_failures = 3
ready_timeout = "120s"
backoff_initial = "200ms"
stop_grace = "5s"
restart_budget = 10
$2
EOF
    PATH="$VENV/bin:$PATH" NODEAGENT_TEST_MARK="$SERVE" \
        "$BIN" serve --config "$SERVE/nodeagent.toml" 2>"$SERVE/agent.log" >/dev/null &
    AGENT_PID=$!
}

status_json() { "$BIN" status --json --state-dir "$SERVE/state" 2>/dev/null; }

# wait_status 'PYTHON CONDITION ON s' SECONDS WHAT: polls `nodeagent status --json`.
wait_status() {
    local i
    for i in $(seq $(($2 * 5))); do
        if status_json | python3 -c "import json, sys; s = json.load(sys.stdin); sys.exit(0 if ($1) else 1)" 2>/dev/null; then
            return 0
        fi
        sleep 0.2
    done
    echo "serve: timed out after $2 s waiting for $3"; status_json; echo; tail -30 "$SERVE/agent.log"; exit 1
}

# Live processes carrying this run's environment mark (what the agent would leave behind).
marked() {
    python3 - "$SERVE" <<'PY'
import os, sys
mark = ("NODEAGENT_TEST_MARK=" + sys.argv[1]).encode()
left = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        if mark in open(f"/proc/{pid}/environ", "rb").read().split(b"\0"):
            left.append(pid)
    except OSError:
        pass
print(" ".join(left))
PY
}

# serve_stop: SIGTERM, exit 0, nothing left.
serve_stop() {
    kill -TERM "$AGENT_PID"
    local rc=0
    wait "$AGENT_PID" || rc=$?
    AGENT_PID=
    [ "$rc" = 0 ] || { echo "serve: exit $rc after SIGTERM"; tail -20 "$SERVE/agent.log"; exit 1; }
    local left
    left=$(marked)
    [ -z "$left" ] || { echo "serve: processes left after SIGTERM: $left"; exit 1; }
    echo "serve: SIGTERM -> exit 0, no engine process left"
}

field() { status_json | python3 -c "import json, sys; s = json.load(sys.stdin); print($1)"; }

# ---- run A ----
serve_start "" ""
wait_status 's["state"] == "ready"' 120 "the real llama.cpp server ready under serve"
echo "serve: ready: $(field 's["message"]'); probe: /v1/models (profile: no /health)"
# Every engine process inside the binding, seen in /proc.
for pid in $(field '" ".join(map(str, s["pids"]))'); do
    cpus=$(awk '/^Cpus_allowed_list/ {print $2}' "/proc/$pid/status")
    [ "$cpus" = 1 ] || { echo "serve: engine pid $pid runs on CPUs $cpus, not 1"; exit 1; }
done
wait_status 's["binding_check"]["ok"] and len(s["binding_check"]["processes"]) >= 1' 10 "a binding check"
echo "serve: every engine process on CPU 1: $(field 's["pids"]')"

printf '%s\n' "What is a NUMA node?" "Name three colours." "Why is the sky blue?" "What is 2 + 2?" >"$SERVE/prompts.txt"
"$BIN" verify --url "http://127.0.0.1:$SPORT" --dataset line --dataset-path "$SERVE/prompts.txt" \
    --max-tokens 16 --temperature 0 --read-timeout 60 --quiet --parallel 1 2 --number 4 \
    --out "$SERVE/sweep" >/dev/null
python3 - "$SERVE" <<'PY'
import json, sys
s = json.load(open(f"{sys.argv[1]}/sweep/summary.json"))
for l in s["levels"]:
    assert l["succeeded"] == l["requests"] == 4, l
print(f"serve: verify sweep through the supervised server: {[l['succeeded'] for l in s['levels']]} of 4 succeeded per level")
PY

old=$(field 's["main_pid"]')
kill -9 "$old"
wait_status 's["restarts"] >= 1 and s["state"] == "ready"' 120 "a restart after kill -9"
why=$(field 's["last_exit"]')
[ "$why" = "engine killed by signal 9" ] || { echo "serve: kill -9 reason: $why"; exit 1; }
kill -0 "$old" 2>/dev/null && { echo "serve: killed engine $old still there"; exit 1; }
echo "serve: kill -9 of pid $old -> restarted: $why"

old=$(field 's["main_pid"]')
kill -STOP "$old"
wait_status 's["restarts"] >= 2 and s["state"] == "ready"' 120 "a restart after SIGSTOP"
why=$(field 's["last_exit"]')
case "$why" in
    "engine hung: 3 failed health checks, last: GET 127.0.0.1:$SPORT/v1/models: no answer within 2s") ;;
    *) echo "serve: SIGSTOP reason: $why"; exit 1 ;;
esac
kill -0 "$old" 2>/dev/null && { echo "serve: stopped engine $old still there"; exit 1; }
echo "serve: SIGSTOP of pid $old -> restarted: $why"
serve_stop

# ---- run B ----
rm -rf "$SERVE/.cache"
serve_start 'argv = ["python3", "-m", "llama_cpp.server", "--model", "{model_path}", "--model_alias", "{served_model_name}", "--host", "{host}", "--port", "{port}", "--interrupt_requests", "False", "--cache", "True", "--cache_type", "disk"]' \
    'canary_interval = "1s"
canary_timeout = "20s"'
wait_status 's["state"] == "ready" and (s.get("liveness") or {}).get("canary") == "ok"' 120 "ready with a passing canary"
echo "serve: disk prompt cache in $SERVE/.cache/llama_cache, canary: $(field 's["liveness"]["canary"]')"
rm -rf "$SERVE/.cache/llama_cache" && touch "$SERVE/.cache/llama_cache"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$SPORT/v1/models")
[ "$code" = 200 ] || { echo "serve: /v1/models answered $code with the cache broken"; exit 1; }
wait_status 's["restarts"] >= 1' 120 "a restart of the server whose completions fail"
why=$(field 's["last_exit"]')
case "$why" in
    "engine fails completions: 3 canary completion(s) in a row failed, last: HTTP 500"*) ;;
    *) echo "serve: completions-fail reason: $why"; exit 1 ;;
esac
echo "serve: completions answering 500 behind a live /v1/models -> restarted: $why"
# The file is still in the way of the new life's cache: take it away so
# the new life serves again, then stop.
rm -f "$SERVE/.cache/llama_cache"
wait_status 's["state"] == "ready"' 120 "ready again"
serve_stop
