#!/usr/bin/env bash
# Set up on a fresh machine, then convert a bundled zoo model and print its parity table.
source "$(dirname "$0")/env.sh"
bridge convert zoo:mobilenet_v2 -o out/mobilenet_v2 --overwrite "$@"
