"""verify.unscale: equalized tensors (x_c / t_c in the QDQ model and the .tflite) multiplied back
by t_c along CHANNEL_AXIS; a tensor whose channels do not fit its factors is left out."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from bridge.quantize.equalize import CHANNEL_AXIS
from bridge.verify.unscale import EQUALIZED, Unscaler

T = [0.5, 2.0, 4.0]


def test_factor_broadcasts_along_the_channel_axis() -> None:
    u = Unscaler.from_facts({"x": T})
    f = u.factor("x", (1, 3, 5, 5))
    assert f is not None and f.shape == (3, 1, 1)
    assert u.factor("x", (2, 3)).shape == (3,)
    assert u.factor("x", (1, 4, 5, 5)) is None  # channel count differs
    assert u.factor("x", (3,)) is None  # no channel axis
    assert u.factor("other", (1, 3)) is None


def test_values_restore_the_float_scale_and_leave_others_alone() -> None:
    x = np.ones((1, 3, 2), np.float32)
    other = np.arange(3, dtype=np.float32)
    got = Unscaler.from_facts({"x": T}).values({"x": x, "y": other})
    np.testing.assert_array_equal(got["x"][0, :, 0], np.float32(T))
    assert got["x"].dtype == np.float32
    assert got["y"] is other


def test_a_tensor_that_does_not_fit_its_factors_is_dropped_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="bridge.verify.unscale"):
        got = Unscaler.from_facts({"x": T}).values({"x": np.ones((1, 2, 2), np.float32)})
    assert got == {}
    assert f"not 3 channels on axis {CHANNEL_AXIS}" in caplog.text


def test_runtimes_unscale_only_the_equalized_runtimes() -> None:
    x = np.ones((1, 3), np.float32)
    values = {"torch": {"x": x}, "ort": {"x": x}, **{k: {"x": x} for k in EQUALIZED}}
    got = Unscaler.from_facts({"x": T}).runtimes(values)
    assert got["torch"]["x"] is x and got["ort"]["x"] is x
    for k in EQUALIZED:
        np.testing.assert_array_equal(got[k]["x"][0], np.float32(T))


def test_no_facts_is_a_no_op() -> None:
    values = {"qdq": {"x": np.ones(2)}}
    assert Unscaler.from_facts(None).runtimes(values) == values
    assert Unscaler().factors == {}
