"""Tensors whose shape hides their layout (1×8×8×8: channels == height == width) must be read
back in the right order: by value, not by shape, so a clean conversion shows no divergence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from bridge.export import ExportConfig, export
from bridge.lower import lower
from bridge.lower.integer import lower_int8
from bridge.passes import run_passes
from bridge.quantize import QuantConfig, quantize
from bridge.runtime import tflite_io, tolerances
from bridge.runtime.capture import layout_by_value, readings
from bridge.runtime.feeds import random_feeds
from bridge.verify.localize import localize_conversion

SQUARE = (1, 8, 8, 8)
#: The conversion link and its floor per mode.
LINK = {"fp32": "ort_vs_tflite", "int8": "qdq_vs_tflite"}


class SquareNet(nn.Module):
    """Every tensor is 1×8×8×8; onnx2tf returns the output channel-last with no TRANSPOSE, which
    the lowering adds back after locating its tensor correspondence."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.mix = nn.Conv2d(8, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(torch.sigmoid(self.conv(x)) * x)


# ---- pure helpers ---------------------------------------------------------------------------


def _nchw(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(SQUARE).astype(np.float32)


def test_both_readings_fit_a_square_shape() -> None:
    x = _nchw()
    assert set(readings(x, SQUARE)) == {False, True}
    assert set(readings(np.zeros((1, 4, 8, 8)), (1, 8, 4, 8))) == {True}
    conv1d = np.zeros((1, 1, 8, 8))  # a 1-D convolution lowered as 2-D: [N, 1, W, C]
    assert set(readings(conv1d, (1, 8, 8))) == {False, True}


def test_layout_by_value_finds_the_order() -> None:
    ref = _nchw()
    nhwc = ref.transpose(0, 2, 3, 1)
    assert layout_by_value(readings(nhwc, SQUARE), ref) is True
    assert layout_by_value(readings(ref, SQUARE), ref) is False
    # non-negative data (after a ReLU), per-channel factors (equalization: x_c / t_c), a sign
    # flip and int8 rounding noise do not hide the order
    relu = np.maximum(ref, 0)
    t = np.geomspace(0.1, 10.0, 8, dtype=np.float32).reshape(1, 8, 1, 1)
    step = float(relu.max()) / 255
    noisy = -np.round(relu / t / step) * step
    assert layout_by_value(readings(noisy.transpose(0, 2, 3, 1), SQUARE), relu) is True
    assert layout_by_value(readings(noisy, SQUARE), relu) is False


def test_layout_by_value_abstains_when_values_cannot_tell() -> None:
    ref = _nchw()
    assert layout_by_value(readings(np.ones(SQUARE, np.float32), SQUARE), ref) is None
    assert layout_by_value(readings(ref.transpose(0, 2, 3, 1), SQUARE), np.zeros(SQUARE)) is None
    other = _nchw(seed=1)  # a tensor unrelated to the reference: neither reading wins
    assert layout_by_value(readings(other, SQUARE), ref) is None
    flat = ref[:, :, 0]  # a shape with one reading
    assert layout_by_value(readings(flat[:, :4], (1, 4, 8)), flat[:, :4]) is None


# ---- fp32 and int8 conversions --------------------------------------------------------------


@pytest.fixture(scope="module")
def square():
    torch.manual_seed(0)
    module = SquareNet().eval()
    exported = export(module, (torch.randn(SQUARE),), ExportConfig())
    optimised = run_passes(exported, None)
    rng = np.random.default_rng(0)
    calib = [(rng.standard_normal(SQUARE).astype(np.float32),) for _ in range(8)]
    qdq = quantize(optimised, QuantConfig(mode="int8"), calib)
    feeds = [random_feeds(optimised.contract, seed=s) for s in range(3)]
    lowered = {"fp32": (None, lower(optimised, mode="fp32")), "int8": (qdq, lower_int8(qdq))}
    return module, exported, optimised, lowered, feeds


def _conversion_sqnr(layers: dict, mode: str) -> dict[str, float]:
    pair = LINK[mode]
    return {
        r["tensor"]: r["metrics"][pair]["sqnr_db"] for r in layers["rows"] if pair in r["metrics"]
    }


@pytest.mark.parametrize("mode", ["fp32", "int8"])
def test_square_tensors_show_no_divergence(square, mode: str) -> None:
    module, exported, optimised, lowered, feeds = square
    qdq, low = lowered[mode]
    layers = localize_conversion(module, exported, optimised, qdq, low, feeds)
    assert all(r["shape"] == list(SQUARE) for r in layers["rows"]), layers["rows"]
    assert layers["first_divergence"] is None, layers["first_divergence"]
    sqnr = _conversion_sqnr(layers, mode)
    # the output is the tensor whose correspondence entry predates its added TRANSPOSE
    assert {"/Sigmoid_output_0", "/Mul_output_0", "output_0"} <= set(sqnr), sqnr
    assert min(sqnr.values()) >= tolerances.floor(mode, LINK[mode]), sqnr


def _rename(data: bytes, renames: dict[str, str]) -> bytes:
    model = tflite_io.load(data)
    tensors = {tflite_io.tensor_name(t): t for t in model.subgraphs[0].tensors}
    assert set(renames) <= set(tensors), f"tensors {sorted(tensors)} changed names: fix the test"
    for old, new in renames.items():
        tensors[old].name = new
    return tflite_io.save(model)


@pytest.mark.parametrize("mode", ["fp32", "int8"])
def test_channel_last_tensor_found_by_its_own_name(square, mode: str) -> None:
    """Without a correspondence, a channel-last tensor carrying the ONNX name is found by that
    name alone (onnx2tf names some that way): its square shape cannot tell its layout."""
    module, exported, optimised, lowered, feeds = square
    qdq, low = lowered[mode]
    sigmoid = "/Sigmoid_output_0"
    renamed = _rename(
        low.data, {sigmoid: f"{sigmoid}__moved", f"{sigmoid}__pre_transpose": sigmoid}
    )
    bare = low.evolve(data=renamed, facts={**low.facts, "correspondence": {}, "float_lowering": {}})
    layers = localize_conversion(module, exported, optimised, qdq, bare, feeds)
    assert layers["first_divergence"] is None, layers["first_divergence"]
    sqnr = _conversion_sqnr(layers, mode)
    assert sigmoid in sqnr and min(sqnr.values()) >= tolerances.floor(mode, LINK[mode]), sqnr
