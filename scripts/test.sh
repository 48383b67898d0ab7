#!/usr/bin/env bash
# Sets up .venv with the dev tools, then runs the linters, the type checker and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh dev
.venv/bin/ruff check engine tui tests benchmarks
.venv/bin/ruff format --check engine tui tests benchmarks
.venv/bin/mypy
.venv/bin/lint-imports
.venv/bin/python -m pytest "$@"
