#!/usr/bin/env bash
# Create .venv (once) and install GATOS into it, with test tools when asked (`setup.sh test`).
# When `cargo` is on PATH, also build the optional native pack reader (native/, the Python
# module gatos_native) with maturin; it is rebuilt only when its sources changed.
# GATOS_NATIVE=0 skips it; without it everything runs on the pure Python path.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if [ "${1:-}" = "test" ]; then
  .venv/bin/python -m pip install -q -e '.[test]'
else
  .venv/bin/python -m pip install -q -e .
fi
if [ "${GATOS_NATIVE:-1}" != "0" ] && command -v cargo >/dev/null 2>&1; then
  stamp=.venv/.gatos-native-sources
  sources=$(cat native/Cargo.toml native/Cargo.lock native/pyproject.toml native/src/*.rs | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$sources" ] || ! .venv/bin/python -c "import gatos_native" 2>/dev/null; then
    echo "building the native pack reader (native/, release build)..." >&2
    .venv/bin/python -m pip install -q ./native
    echo "$sources" > "$stamp"
  fi
fi
