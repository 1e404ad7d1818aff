"""A max-pool's PADV2 whose pad value is its output's zero point becomes a plain PAD, and an
output whose shape hides its layout is put back in order by value."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch import nn

import bridge
from bridge.runtime import tflite_io, tolerances


class _ConvPool(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(self.conv(x)))


def _ops(data: bytes) -> Counter:
    model = tflite_io.load(data)
    names = {v: k for k, v in vars(tflite_io.schema().BuiltinOperator).items() if k.isupper()}
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    return Counter(names[codes[op.opcodeIndex]] for op in model.subgraphs[0].operators)


def test_relu_maxpool_padding_is_a_plain_pad(tmp_path: Path) -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    calib = [(rng.standard_normal((1, 3, 16, 16)).astype(np.float32),) for _ in range(12)]
    result = bridge.convert(
        _ConvPool().eval(),
        (torch.randn(1, 3, 16, 16),),
        tmp_path,
        quantize="int8",
        calibration=calib,
    )
    ops = _ops(result.tflite_path.read_bytes())
    assert ops["PAD"] == 1 and ops["PADV2"] == 0, ops
    assert result.report["lowering"]["padv2_as_pad"] == 1
    assert result.passed


def test_square_output_whose_shape_hides_the_layout_converts(tmp_path: Path) -> None:
    """[1, 8, 8, 8]: channel-last and channel-first shapes are equal; onnx2tf returns it
    channel-last with no TRANSPOSE, and only values show it (`output_order`)."""
    torch.manual_seed(0)
    result = bridge.convert(_ConvPool().eval(), (torch.randn(1, 3, 16, 16),), tmp_path)
    assert result.report["tflite_contract"]["outputs"][0]["shape"] == [1, 8, 8, 8]
    assert _ops(result.tflite_path.read_bytes())["TRANSPOSE"] == 2  # image in, output back
    floor = tolerances.floor("fp32", "ort_vs_tflite")
    assert all(c["sqnr_db"] >= floor for c in result.report["parity"]["ort_vs_tflite"].values())
