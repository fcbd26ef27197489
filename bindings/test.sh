#!/usr/bin/env bash
# Build and test the client SDKs (Go, TypeScript, Rust): each checks the shared vectors
# byte for byte and runs the shared scenario against a live gatosd (bindings/testnode.py,
# run by the project's .venv, or $GATOS_PYTHON).
set -euo pipefail
cd "$(dirname "$0")"
export GATOS_PYTHON="${GATOS_PYTHON:-$(cd .. && pwd)/.venv/bin/python}"
step() { printf '\n== bindings: %s\n' "$*"; }

step "vectors are what the Python core generates"
"$GATOS_PYTHON" vectors/generate.py --check

step "go ($(go version | cut -d' ' -f3))"
(cd go && go vet ./... && go test -count=1 ./...)

step "typescript (node $(node --version))"
(cd typescript && npm ci --no-audit --no-fund && npm test)

step "rust ($(cargo --version | cut -d' ' -f2))"
(cd rust && cargo test --locked)
