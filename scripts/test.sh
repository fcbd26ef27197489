#!/usr/bin/env bash
# Every test: set up .venv with test tools, lint, then the whole pytest suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
bash bindings/test.sh
