from __future__ import annotations

import numpy as np
import pytest

from bridge.contract import IOContract, TensorSpec, guess_layout, to_layout
from bridge.errors import ShapeError


def _contract() -> IOContract:
    return IOContract(
        inputs=(
            TensorSpec("image", (1, 3, 8, 8), "float32", "NCHW"),
            TensorSpec("seq", (None, 5, 4), "float32", "plain"),
        ),
        outputs=(TensorSpec("feat", (1, 6, 8, 8), "float32", "NCHW"),),
    )


def test_guess_layout_never_calls_3d_channel_first() -> None:
    assert guess_layout((1, 50, 32)) == "plain"
    assert guess_layout((1, 3, 224, 224)) == "NCHW"
    assert guess_layout((1, 10)) == "plain"


def test_nhwc_moves_only_image_channels() -> None:
    nhwc = _contract().as_nhwc()
    assert nhwc.nhwc
    assert nhwc.inputs[0].shape == (1, 8, 8, 3) and nhwc.inputs[0].layout == "NHWC"
    assert nhwc.inputs[1] == _contract().inputs[1]
    assert nhwc.outputs[0].shape == (1, 8, 8, 6)


def test_to_layout_round_trip() -> None:
    c = _contract()
    x = np.arange(3 * 64, dtype=np.float32).reshape(1, 3, 8, 8)
    y = to_layout(x, c.inputs[0], c.as_nhwc().inputs[0])
    assert y.shape == (1, 8, 8, 3)
    np.testing.assert_array_equal(to_layout(y, c.as_nhwc().inputs[0], c.inputs[0]), x)


def test_check_feeds_names_the_tensor() -> None:
    c = _contract()
    good = {"image": np.zeros((1, 3, 8, 8), np.float32), "seq": np.zeros((4, 5, 4), np.float32)}
    c.check_feeds(good)  # symbolic batch accepts 4
    with pytest.raises(ShapeError, match=r"'image'.*expected shape"):
        c.check_feeds({**good, "image": np.zeros((1, 3, 9, 8), np.float32)})
    with pytest.raises(ShapeError, match=r"'seq'.*dtype float32"):
        c.check_feeds({**good, "seq": np.zeros((1, 5, 4), np.float64)})
    with pytest.raises(ShapeError, match=r"missing \['seq'\]"):
        c.check_feeds({"image": good["image"]})


def test_dict_round_trip() -> None:
    c = _contract()
    assert IOContract.from_dict(c.to_dict()) == c
