#!/usr/bin/env bash
# The SLO search and the server-metrics scrape against a real engine (issue 17): a small
# `verify --search concurrency` under a TTFT objective, with the server's /metrics read during
# every level when it has one. Called by scripts/real-engine-check.sh at its end with the
# llama.cpp server's URL; runnable by hand against any OpenAI-compatible server.
# Usage: scripts/real-engine-slo.sh URL [MODEL]
# Env: NODEAGENT_BIN (default target/release/nodeagent), SLO (default ttft=3s),
#      SEARCH_MAX_STEPS (default 4).
# llama-cpp-python's server (the one real-engine-check.sh runs) has no /metrics (only
# llama.cpp's own llama-server has, with --metrics): the script says which it found.
set -euo pipefail
cd "$(dirname "$0")/.."
URL=${1:?usage: $0 URL [MODEL]}
MODEL=${2:-}
BIN=${NODEAGENT_BIN:-target/release/nodeagent}
WORK=$(mktemp -d /tmp/real-engine-slo.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
[ -x "$BIN" ] || cargo build --release --locked --quiet

if curl -sf "$URL/metrics" -o "$WORK/metrics.txt" && grep -q '^\(vllm\|llamacpp\):' "$WORK/metrics.txt"; then
    echo "server metrics: $URL/metrics answers with $(grep -c '^\(vllm\|llamacpp\):' "$WORK/metrics.txt") known samples"
else
    echo "server metrics: $URL has no /metrics with vLLM's or llama.cpp's names (llama-cpp-python has none); the search runs without them"
fi

printf 'what is NUMA?\nwhy pin a GPU server to one node?\nname three colours.\n' >"$WORK/prompts.txt"
args=(--url "$URL" --dataset line --dataset-path "$WORK/prompts.txt" --max-tokens 8
      --search concurrency --slo "${SLO:-ttft=3s}" --slo-attainment 0.9
      --search-max-steps "${SEARCH_MAX_STEPS:-4}" --number 6 --metrics-interval 500ms
      --quiet --out "$WORK/out")
[ -n "$MODEL" ] && args+=(--model "$MODEL")
"$BIN" verify "${args[@]}" | sed -n '/^SLO search/p'
python3 - "$WORK/out/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
search = s["search"]
assert search["steps"], "the search ran no step"
for st in search["steps"]:
    lvl = s["levels"][st["level"]]
    assert lvl["parallel"] == st["parallel"], (lvl["parallel"], st)
best = search["best"]
print(f"search: {len(search['steps'])} steps, stop {search['stop']}, best "
      f"{'none' if best is None else 'c=%d (%.0f %% met)' % (best['parallel'], best['attainment'] * 100)}")
servers = [l["server"] for l in s["levels"] if l.get("server")]
if servers:
    sv = servers[-1]
    print(f"server metrics ({sv['engine']}): {sv['scrapes']} scrapes in the last level, "
          f"prompt tokens {sv['prompt_tokens']}, generated {sv['generation_tokens']}, "
          f"warnings {sv['warnings'] or 'none'}")
else:
    print("server metrics: none read (the server has no /metrics)")
PY
