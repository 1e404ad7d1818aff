"""A constant output (detection anchors, a prior map) is kept in the .tflite and verified.

torch.onnx.export folds `return self.head(x), self.anchors` into a graph output that is an
initializer; onnx2tf keeps it as a constant tensor with no producer. LiteRT returns such a
tensor's data as the output, so the .tflite holds it as is and parity checks it like any other.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import bridge
from bridge.runtime import tolerances
from tests.reliability.conftest import tiny_cnn


class _Detector(nn.Module):
    """A head that depends on the input, and anchors that do not."""

    def __init__(self) -> None:
        super().__init__()
        self.head, _ = tiny_cnn()
        self.register_buffer("anchors", torch.randn(10, 4))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(x), self.anchors


class _PriorMap(nn.Module):
    """An image output and a constant 4-D prior map (channel-first, like the image)."""

    def __init__(self) -> None:
        super().__init__()
        self.cnn, _ = tiny_cnn()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        self.register_buffer("prior", torch.randn(1, 2, 8, 8))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.conv(x), self.prior * 2.0, self.cnn(x)


def _tflite_outputs(path: Path, *arrays: np.ndarray) -> dict[str, np.ndarray]:
    """LiteRT on `path` twice in a row (as users invoke); the second run's outputs by name."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=1)
    interp.allocate_tensors()
    for _ in range(2):
        for d, x in zip(interp.get_input_details(), arrays, strict=True):
            interp.set_tensor(d["index"], x)
        interp.invoke()
    return {d["name"]: interp.get_tensor(d["index"]) for d in interp.get_output_details()}


def _calibration(x: torch.Tensor) -> list[tuple[np.ndarray]]:
    rng = np.random.default_rng(5)
    return [(rng.standard_normal(tuple(x.shape)).astype(np.float32),) for _ in range(32)]


@pytest.mark.parametrize("mode", ["fp32", "fp16", "dynamic", "int8"])
def test_constant_output_beside_a_computed_one(tmp_path: Path, mode: str) -> None:
    torch.manual_seed(0)
    model, (x,) = _Detector().eval(), tiny_cnn()[1]
    calibration = _calibration(x) if mode == "int8" else None
    conv = bridge.convert(
        model,
        (x,),
        tmp_path / "out",
        quantize=mode,
        calibration=calibration,
        output_names=["boxes", "anchors"],
    )
    pair = conv.report["parity"]["torch_vs_tflite"]
    assert set(pair) == {"boxes", "anchors"}, pair
    floor = tolerances.floor(mode, "torch_vs_tflite")
    assert pair["anchors"]["passed"] and pair["anchors"]["sqnr_db"] >= floor, pair["anchors"]
    got = _tflite_outputs(conv.tflite_path, x.numpy())
    assert list(got) == ["boxes", "anchors"]
    assert got["anchors"].shape == (10, 4) and got["anchors"].dtype == np.float32
    if mode == "fp32":
        np.testing.assert_array_equal(got["anchors"], model.anchors.numpy())
        np.testing.assert_allclose(got["boxes"], model.head(x).detach().numpy(), atol=1e-5)


def test_constant_image_shaped_output_keeps_its_layout(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, x = _PriorMap().eval(), torch.randn(1, 3, 8, 8)
    conv = bridge.convert(model, (x,), tmp_path / "out", output_names=["feat", "prior", "logits"])
    assert conv.passed, conv.report["failures"]
    got = _tflite_outputs(conv.tflite_path, x.numpy())
    assert list(got) == ["feat", "prior", "logits"]
    np.testing.assert_array_equal(got["prior"], model.prior.numpy() * 2.0)
    assert got["feat"].shape == (1, 2, 8, 8)
