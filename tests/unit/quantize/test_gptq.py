"""GPTQ rounding: integer levels in [−127, 127] with a smaller output error than nearest."""

from __future__ import annotations

import numpy as np

from bridge.quantize.gptq import gptq_levels


def test_gptq_levels_beat_nearest_on_correlated_inputs():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((4000, 8))
    x = base @ rng.standard_normal((8, 64)) + 0.1 * rng.standard_normal((4000, 64))
    h = (x.T @ x / len(x))[None]
    w = rng.standard_normal((1, 16, 64))
    scale = np.abs(w).max(axis=2) / 127
    q = gptq_levels(w, scale, h)
    nearest = np.clip(np.rint(w / scale[:, :, None]), -127, 127)
    assert np.array_equal(q, np.rint(q)) and q.min() >= -127 and q.max() <= 127

    def out_err(levels: np.ndarray) -> float:
        return float(((x @ (levels * scale[:, :, None] - w)[0].T) ** 2).mean())

    # decorrelating the rounding error along H⁻¹ must cut the output error well below nearest
    assert out_err(q) < 0.5 * out_err(nearest), (out_err(q), out_err(nearest))


def test_gptq_is_the_default_and_keeps_weights_on_the_grid(cnn):
    from bridge.quantize import QuantConfig, quantize

    from .conftest import random_samples

    samples = random_samples(cnn, 8)
    nearest = quantize(cnn, QuantConfig(mode="int8", weight_rounding="nearest"), samples)
    gptq = quantize(cnn, QuantConfig(mode="int8"), samples)
    rounding = {
        e.get("rounding")
        for e in gptq.facts["quantization"]["tensors"].values()
        if e.get("kind") == "weight"
    }
    assert "gptq" in rounding
    assert {
        e.get("rounding")
        for e in nearest.facts["quantization"]["tensors"].values()
        if e.get("kind") == "weight"
    } <= {"nearest", None}
    # same scales either way: only the chosen integer levels differ
    for name, e in gptq.facts["quantization"]["tensors"].items():
        if e.get("kind") == "weight":
            assert e["scale"] == nearest.facts["quantization"]["tensors"][name]["scale"]
