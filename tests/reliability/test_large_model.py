"""Models beyond protobuf's 2 GiB limit are refused up front with an ExportError.

bridge does not write external-data ONNX (onnx2tf's flatbuffer_direct output and TFLite
flatbuffers stop at 2 GiB too), so the honest answer is a clear refusal. A real > 2 GiB model
is too heavy for CI; the size threshold is lowered instead, which exercises the same checks.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import bridge
from bridge import export as export_module
from bridge.errors import ExportError
from tests.reliability.conftest import tiny_cnn


def _weight_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def test_threshold_is_below_the_protobuf_limit() -> None:
    assert export_module.MAX_MODEL_BYTES < 2**31


def test_weights_over_the_limit_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, inputs = tiny_cnn()
    monkeypatch.setattr(export_module, "MAX_MODEL_BYTES", _weight_bytes(model) - 1)
    with pytest.raises(ExportError) as info:
        bridge.convert(model, inputs, tmp_path / "out")
    message = str(info.value)
    assert "weights (parameters and buffers) take" in message and "GiB" in message
    assert "external-data ONNX is not supported" in message
    assert "Convert the model in parts" in message
    assert not (tmp_path / "out").exists()


def test_weights_at_the_limit_convert(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, inputs = tiny_cnn()
    onnx_bytes = _weight_bytes(model) + 4096  # the graph itself adds a little
    monkeypatch.setattr(export_module, "MAX_MODEL_BYTES", onnx_bytes)
    assert bridge.convert(model, inputs, tmp_path / "out").passed


class _ConstantInForward(nn.Module):
    """No parameters; a large constant made in forward() ends up in the ONNX file."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.arange(4096, dtype=torch.float32).reshape(1, 4096)


def test_exported_model_over_the_limit_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export_module, "MAX_MODEL_BYTES", 8192)
    with pytest.raises(ExportError, match=r"the model's exported ONNX model take 0\.00 GiB"):
        bridge.convert(_ConstantInForward(), (torch.randn(1, 4096),), tmp_path / "out")
