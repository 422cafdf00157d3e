#!/usr/bin/env bash
# verify's peers side by side: NVIDIA's aiperf and vLLM's guidellm against `nodeagent simulate`
# on loopback, measured the way scripts/bench-verify.sh measures nodeagent and evalscope perf
# (BENCHMARKS.md section "verify: peers side by side").
#
# Each tool is installed from PyPI into its own venv under .cache/ (pinned versions) if missing.
# Both run offline: their tokenizer is a local folder made from testdata/tokenizers/
# bytelevel-bpe.json (a Hugging Face tokenizer.json; aiperf's `--tokenizer builtin` and
# guidellm's default would download one). Each tool runs twice, with the same load as nodeagent
# in bench-verify.sh: concurrency C, prompts of 16 tokens, 16 output tokens (ignore_eos),
# streamed chat completions, a fixed request count:
#   1. cost: against `simulate --zero-delay`: throughput (the tool's own figure), client CPU
#      (user + system of the tool and its children, /usr/bin/time) per 1000 requests, max RSS
#      (of the largest process: aiperf and guidellm spawn workers);
#   2. accuracy: against a simulator with a TTFT of 100 ms: the tool's TTFT p50/p99 next to the
#      simulator's own (its ground truth, GET /sim/requests), and the error.
# Usage: scripts/bench-peers.sh
# Env: BENCH_PEER_REQUESTS (requests per run, default 3000), BENCH_PEER_CONCURRENCY (default 300),
#      SKIP_AIPERF=1, SKIP_GUIDELLM=1, NODEAGENT_BIN to use a binary already built.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${BENCH_PEER_REQUESTS:-3000}
C=${BENCH_PEER_CONCURRENCY:-300}
BIN=${NODEAGENT_BIN:-target/release/nodeagent}
AIPERF_VERSION=0.13.0
GUIDELLM_VERSION=0.8.1
WORK=$(mktemp -d /tmp/bench-peers.XXXXXX)
SIM_PID=
cleanup() { [ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT

[ -n "${NODEAGENT_BIN:-}" ] || cargo build --release --locked --quiet
install() { # venv-name pip-requirement executable
    local venv=.cache/$1-venv
    if [ ! -x "$venv/bin/$3" ]; then
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q "$2"
    fi
}
[ -n "${SKIP_AIPERF:-}" ] || install aiperf "aiperf==$AIPERF_VERSION" aiperf
[ -n "${SKIP_GUIDELLM:-}" ] || install guidellm "guidellm==$GUIDELLM_VERSION" guidellm

# A local tokenizer folder (transformers' AutoTokenizer reads tokenizer.json + its config).
mkdir -p "$WORK/tokenizer"
cp testdata/tokenizers/bytelevel-bpe.json "$WORK/tokenizer/tokenizer.json"
cat >"$WORK/tokenizer/tokenizer_config.json" <<'JSON'
{"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 4096,
 "eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
JSON
# Not HF_HUB_OFFLINE: aiperf then looks a local tokenizer path up as a hub snapshot and fails.

# start_sim: scripts/bench-lib.sh.
. scripts/bench-lib.sh

# Runs a command (output to $WORK/last.*); prints "wall_s user_s sys_s maxrss_kib".
measure() {
    /usr/bin/time -f '%e %U %S %M' -o "$WORK/time" "$@" >"$WORK/last.out" 2>"$WORK/last.err" </dev/null || {
        echo "failed: $*" >&2; tail -5 "$WORK/last.err" >&2; tail -5 "$WORK/last.out" >&2; return 1; }
    tail -1 "$WORK/time"
}

aiperf() { # artifact-dir
    measure .cache/aiperf-venv/bin/aiperf profile --model qwen2.5 --url "$URL" --endpoint-type chat \
        --streaming --concurrency "$C" --request-count "$N" --isl 16 --isl-stddev 0 --osl 16 \
        --osl-stddev 0 --extra-inputs ignore_eos:true --tokenizer "$WORK/tokenizer" \
        --random-seed 0 --ui none --no-server-metrics --no-gpu-telemetry --artifact-dir "$1"
}
guidellm() { # output-dir
    mkdir -p "$1"
    # It writes benchmarks.json to its results directory (the working one by default).
    local bin=$PWD/.cache/guidellm-venv/bin/guidellm
    (cd "$1" && measure env GUIDELLM__DEFAULT_RESULTS_DIR="$1" "$bin" run \
        --backend "kind=openai_http,target=$URL,model=qwen2.5" \
        --profile "kind=concurrent,streams=$C" \
        --constraint "kind=max_requests,count=$N" \
        --data "kind=synthetic_text,prompt_tokens=16,output_tokens=16" \
        --tokenizer "kind=huggingface_auto,model=$WORK/tokenizer" \
        --disable-console-interactive)
}

# Prints "req_per_s ttft_p50_s ttft_p99_s" from a tool's output folder.
figures() { # tool dir
    python3 - "$1" "$2" <<'PY'
import glob, json, sys
tool, d = sys.argv[1], sys.argv[2]
if tool == "aiperf":
    m = json.load(open(glob.glob(d + "/**/profile_export_aiperf.json", recursive=True)[0]))
    m = m.get("records", m) if "request_throughput" not in m else m
    ttft = m["time_to_first_token"]
    scale = {"ms": 1e-3, "ns": 1e-9, "s": 1.0, "us": 1e-6}[ttft.get("unit", "ms")]
    print(m["request_throughput"]["avg"], ttft["p50"] * scale, ttft["p99"] * scale)
else:
    doc = json.load(open(glob.glob(d + "/**/benchmarks.json", recursive=True)[0]))
    b = doc["benchmarks"][0]["metrics"]
    rps = b["requests_per_second"]["successful"]["mean"]
    ttft = b["time_to_first_token_ms"]["successful"]["percentiles"]
    print(rps, ttft["p50"] * 1e-3, ttft["p99"] * 1e-3)
PY
}

tools=()
[ -n "${SKIP_AIPERF:-}" ] || tools+=(aiperf)
[ -n "${SKIP_GUIDELLM:-}" ] || tools+=(guidellm)
[ ${#tools[@]} -gt 0 ] || { echo "both peers skipped"; exit 0; }
echo "load before: $(uptime)"

echo "== peers, cost: zero-delay simulator, 16 content chunks + usage, concurrency $C, $N requests"
start_sim --zero-delay
for tool in "${tools[@]}"; do
    read -r wall user sys rss < <("$tool" "$WORK/$tool-cost") || { echo "$tool: failed (above)"; continue; }
    read -r qps _ _ < <(figures "$tool" "$WORK/$tool-cost")
    cpu=$(python3 -c "print(round(($user+$sys)/$N*1000,3))")
    printf '%-22s %10.1f req/s  %8s s CPU/1000 req  %7s MiB max RSS  (%s s wall)\n' \
        "$tool $( [ "$tool" = aiperf ] && echo $AIPERF_VERSION || echo $GUIDELLM_VERSION)" \
        "$qps" "$cpu" "$((rss/1024))" "$wall"
done

echo
echo "== peers, timing accuracy: simulator TTFT 100 ms, 10 ms per token, concurrency $C, $N requests"
for tool in "${tools[@]}"; do
    # A fresh simulator per tool: its /sim/requests then holds that tool's requests alone.
    start_sim --prefill-base-ms 100 --prefill-per-token-ms 0 --decode-base-ms 10 --decode-per-running-ms 0 --max-num-seqs 0
    "$tool" "$WORK/$tool-acc" >/dev/null || { echo "$tool: failed (above)"; continue; }
    curl -s "$URL/sim/requests" >"$WORK/truth-$tool.json"
    read -r _ p50 p99 < <(figures "$tool" "$WORK/$tool-acc")
    python3 - "$tool" "$WORK/truth-$tool.json" "$p50" "$p99" <<'PY'
import json, sys
tool, path, p50, p99 = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
truth = json.load(open(path))
truth = truth.get("requests", truth) if isinstance(truth, dict) else truth
ttfts = sorted((t["first_token_offset_ns"] - t["arrival_offset_ns"]) / 1e9 for t in truth
               if t.get("first_token_offset_ns") is not None)
p = lambda q: ttfts[int(q * (len(ttfts) - 1))]
for name, got, q in (("p50", p50, 0.5), ("p99", p99, 0.99)):
    print(f"{tool}: TTFT {name} reported {got*1e3:.1f} ms vs simulator {p(q)*1e3:.1f} ms "
          f"({len(ttfts)} requests): error {(got-p(q))*1e3:.1f} ms")
PY
done
echo "load after: $(uptime)"
rm -rf "$WORK"
