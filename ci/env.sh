# Sourced by the other ci/ scripts: find Python 3.12, create .venv, install bridge into it.
# Idempotent: reinstalls only when pyproject.toml changes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

find_python() {
  local c
  for c in python3.12 python3.13; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys' >/dev/null 2>&1; then
      command -v "$c"; return 0
    fi
  done
  local roots=("${PYENV_ROOT:-$HOME/.pyenv}/versions" /usr/local/bin /usr/bin /opt/python)
  for c in "${roots[0]}"/3.12*/bin/python3.12 "${roots[0]}"/3.13*/bin/python3.13 \
           /usr/local/bin/python3.12 /usr/bin/python3.12; do
    if [ -x "$c" ] && "$c" -c 'import sys' >/dev/null 2>&1; then echo "$c"; return 0; fi
  done
  if command -v pyenv >/dev/null 2>&1; then
    c="$(PYENV_VERSION="$(pyenv versions --bare | grep -E '^3\.1[23]' | head -n1)" pyenv which python3 2>/dev/null || true)"
    if [ -n "$c" ] && [ -x "$c" ]; then echo "$c"; return 0; fi
  fi
  return 1
}

if [ ! -x "$VENV/bin/python" ]; then
  PY="$(find_python)" || {
    echo "bridge: Python 3.12 not found (tried python3.12 on PATH and pyenv's 3.12.x)." >&2
    echo "bridge: install it (e.g. 'pyenv install 3.12') and run this again." >&2
    exit 1
  }
  echo "[setup] creating $VENV with $PY" >&2
  "$PY" -m venv "$VENV"
fi

STAMP="$VENV/.bridge-installed"
WANT="$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ]; then
  echo "[setup] installing bridge and its pinned dependencies (torch, onnx2tf, LiteRT)..." >&2
  "$VENV/bin/python" -m pip install -q --upgrade pip >&2
  "$VENV/bin/python" -m pip install -q -e "$ROOT[test]" >&2
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
# Quiet TensorFlow and keep every thread count predictable on small machines.
export TF_CPP_MIN_LOG_LEVEL=3 TF_ENABLE_ONEDNN_OPTS=0
cd "$ROOT"
