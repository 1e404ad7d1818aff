#!/usr/bin/env bash
# Install headless Chromium for the browser tests (tests/browser, `pytest -m browser`), then run them.
# Idempotent: skips the install when a Chromium binary is already on PATH.
set -euo pipefail
find_chromium() {
  local c
  for c in chromium chromium-browser google-chrome-stable google-chrome; do
    if command -v "$c" >/dev/null 2>&1; then command -v "$c"; return 0; fi
  done
  return 1
}
if ! find_chromium >/dev/null; then
  SUDO=""
  if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
  echo "[browser] installing chromium with apt-get" >&2
  $SUDO apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
    chromium fonts-dejavu-core >&2
fi
echo "[browser] using $(find_chromium)" >&2
if [ "${1:-}" != "--install-only" ]; then
  source "$(dirname "$0")/env.sh"
  python -m pytest -m browser -q tests/browser "$@"
fi
