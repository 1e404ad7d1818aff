"""A filter onnx2tf scaled by a folded constant still matches its QDQ weight, with the factor."""

from __future__ import annotations

import numpy as np

from bridge.lower.integer.match import match_channels, match_channels_scaled


def test_scaled_filter_matches_with_its_factor() -> None:
    rng = np.random.default_rng(0)
    onnx_w = np.round(rng.standard_normal((16, 8, 1, 1)) * 40) / 40  # OIHW, on a grid
    tflite_w = (np.transpose(onnx_w, (0, 2, 3, 1)) / 6).astype(np.float32)  # OHWI × 1/6
    weights = {"other": (rng.standard_normal((16, 8, 1, 1)), 0), "w": (onnx_w, 0)}
    assert match_channels(tflite_w, 0, weights) is None
    name, factor = match_channels_scaled(tflite_w, 0, weights)
    assert name == "w" and abs(factor - 1 / 6) < 1e-6


def test_negative_or_uneven_factors_do_not_match() -> None:
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 3, 3, 3))
    uneven = w * np.array([1.0, 2.0, 1.0, 1.0]).reshape(4, 1, 1, 1)
    assert match_channels_scaled(uneven, 0, {"w": (w, 0)}) is None
    assert match_channels_scaled(-w, 0, {"w": (w, 0)}) is None
