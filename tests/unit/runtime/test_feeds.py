"""runtime.feeds.random_feeds: seeded inputs shaped and typed by the contract."""

from __future__ import annotations

import numpy as np

from bridge.contract import IOContract, TensorSpec
from bridge.runtime.feeds import random_feeds

CONTRACT = IOContract(
    inputs=(
        TensorSpec("image", (None, 3, 4, 4), "float32", "NCHW"),
        TensorSpec("ids", (None, 7), "int64"),
        TensorSpec("mask", (None, 7), "bool"),
        TensorSpec("half", (2,), "float16"),
    ),
    outputs=(),
)


def test_shapes_dtypes_and_ranges() -> None:
    feeds = random_feeds(CONTRACT, seed=0, batch=3)
    assert list(feeds) == ["image", "ids", "mask", "half"]
    assert feeds["image"].shape == (3, 3, 4, 4) and feeds["image"].dtype == np.float32
    assert feeds["ids"].shape == (3, 7) and feeds["ids"].dtype == np.int64
    assert feeds["ids"].min() >= 0 and feeds["ids"].max() <= 9
    assert feeds["mask"].dtype == np.bool_ and feeds["half"].dtype == np.float16
    assert feeds["half"].shape == (2,)
    x = feeds["image"].astype(np.float64)
    assert abs(x.mean()) < 0.5 and 0.5 < x.std() < 1.5  # standard normal over 144 values
    CONTRACT.check_feeds(feeds)


def test_seeded() -> None:
    a, b, c = (random_feeds(CONTRACT, seed=s) for s in (5, 5, 6))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["image"], c["image"])
