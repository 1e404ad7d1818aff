#!/usr/bin/env bash
# Set up on a fresh machine, then run the test suite (fast tests, then the slow zoo sweep).
source "$(dirname "$0")/env.sh"
ruff check bridge models tools tests
python -m pytest -m "not slow and not accuracy and not browser" -n 2 -q "$@"
python -m pytest -m "slow" -n 2 -q "$@"
