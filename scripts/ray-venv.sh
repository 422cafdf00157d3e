#!/usr/bin/env bash
# Installs the real Ray (PyPI `ray[default]`, pinned) into a virtualenv that the Ray tests
# (tests/ray.rs) start their engine from. Kept in /var/cache/nodeagent-test/ray-venv
# (NODEAGENT_RAY_VENV) across runs, so only the first run downloads it (~100 MB); a venv that
# already imports the pinned version is left alone. `[default]` brings the dashboard and its
# per-node agents, the Ray processes a vLLM install runs too. Called by `scripts/setup.sh test`.
set -euo pipefail

RAY_VERSION=2.60.0
VENV=${NODEAGENT_RAY_VENV:-/var/cache/nodeagent-test/ray-venv}

if "$VENV/bin/python" -c "import ray, aiohttp, sys; sys.exit(ray.__version__ != '$RAY_VERSION')" 2>/dev/null; then
    exit 0
fi
echo "ray-venv: installing ray[default]==$RAY_VERSION into $VENV (~100 MB download)" >&2
mkdir -p "$(dirname "$VENV")"
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check "ray[default]==$RAY_VERSION"
"$VENV/bin/python" -c "import ray; assert ray.__version__ == '$RAY_VERSION', ray.__version__"
