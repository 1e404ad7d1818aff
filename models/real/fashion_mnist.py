"""A small CNN trained on Debian's Fashion-MNIST, cached under the bridge cache folder.

Training takes about 30-60 s on one core (two epochs of Adam over the 60,000 training images)
and reaches about 90% top-1 on the 10,000 test images. The weights are cached as
`fashion_mnist/cnn-<hash>.pt`, where the hash is of this file's source: editing the model or the
training code retrains, nothing else does. Training uses its own seeded generators, never the
global random state.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bridge.errors import ConfigError
from models.real import assets
from models.real.task import Dataset, RealModel, split

log = logging.getLogger(__name__)

CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST training-set pixel mean and std
EPOCHS, BATCH, LR, SEED = 2, 128, 2e-3, 0


class FashionCNN(nn.Module):
    """(conv3x3-BN-ReLU-maxpool) x 2, then fc-ReLU-fc: 1x28x28 → 10 logits, 109k parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10)
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(image))


def fashion_mnist(
    *, eval_samples: int = 2000, calib_samples: int = 128, seed: int = 0
) -> RealModel:
    """The cached (or freshly trained) FashionCNN and real Fashion-MNIST images.

    Calibration images come from the training split, evaluation images from the test split.

    Raises:
        AssetMissingError: Debian's dataset-fashion-mnist is not installed.
        ConfigError: more samples are asked for than the splits hold.
    """
    train_x, train_y = load_split("train")
    test_x, test_y = load_split("t10k")
    if eval_samples > len(test_x) or calib_samples > len(train_x):
        raise ConfigError(f"Fashion-MNIST has {len(test_x)} test and {len(train_x)} train images")
    model = cached_model(train_x, train_y)
    _, ev = split(len(test_x), calibration=0, evaluation=eval_samples, seed=seed)
    cal, _ = split(len(train_x), calibration=calib_samples, evaluation=0, seed=seed + 1)
    data = Dataset(
        task="classify",
        calibration=(train_x[cal],),
        evaluation=(test_x[ev],),
        labels=test_y[ev],
        class_names=CLASS_NAMES,
        source="fashion-mnist:t10k",
    )
    return RealModel(model, (torch.from_numpy(train_x[cal[:1]].copy()),), data)


def load_split(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 1, 28, 28) normalised float32 and labels (N,) int64 of "train" or "t10k"."""
    images = _idx(assets.FASHION_MNIST / f"{kind}-images-idx3-ubyte.gz", offset=16)
    labels = _idx(assets.FASHION_MNIST / f"{kind}-labels-idx1-ubyte.gz", offset=8)
    x = ((images.astype(np.float32) / 255.0 - MEAN) / STD).reshape(-1, 1, 28, 28)
    return x, labels.astype(np.int64)


def _idx(path: Path, *, offset: int) -> np.ndarray:
    raw = gzip.decompress(assets.require(path, "Debian dataset-fashion-mnist").read_bytes())
    return np.frombuffer(raw, dtype=np.uint8, offset=offset)


def cache_path() -> Path:
    """Where the trained weights are cached: keyed by the hash of this file's source."""
    digest = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    return assets.cache_dir() / "fashion_mnist" / f"cnn-{digest}.pt"


def cached_model(train_x: np.ndarray, train_y: np.ndarray) -> FashionCNN:
    """The trained FashionCNN in eval mode: loaded from the cache, else trained and cached."""
    path = cache_path()
    model = FashionCNN()
    if path.exists():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval()
    t0 = time.perf_counter()
    train(model, train_x, train_y)
    log.info("trained FashionCNN in %.1f s; caching it at %s", time.perf_counter() - t0, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    return model.eval()


def train(model: nn.Module, x: np.ndarray, y: np.ndarray) -> None:
    """Adam over `EPOCHS` epochs of shuffled mini-batches, seeded by SEED alone.

    Runs on one thread: the result then does not depend on the machine's core count, and on a
    shared 2-core machine one thread is also the faster choice.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _train(model, x, y)
    finally:
        torch.set_num_threads(threads)
    model.eval()


def _train(model: nn.Module, x: np.ndarray, y: np.ndarray) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        for m in model.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
        gen = torch.Generator().manual_seed(SEED)
        xs, ys = torch.from_numpy(x), torch.from_numpy(y)
        opt = torch.optim.Adam(model.parameters(), lr=LR)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=LR, total_steps=EPOCHS * ((len(xs) + BATCH - 1) // BATCH)
        )
        model.train()
        for _ in range(EPOCHS):
            for idx in torch.randperm(len(xs), generator=gen).split(BATCH):
                loss = nn.functional.cross_entropy(model(xs[idx]), ys[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
