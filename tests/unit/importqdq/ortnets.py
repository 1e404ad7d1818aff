"""Small float CNNs quantized by ONNX Runtime's own quantizer (QDQ), and edits that break one
TFLite kernel rule each."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

SHAPE = (1, 3, 16, 16)


class SmallCnn(nn.Module):
    """Conv-BN-ReLU, depthwise Conv-BN-ReLU, pointwise conv + residual, max-pool, mean, Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.dw = nn.Sequential(
            nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU()
        )
        self.pw = nn.Conv2d(8, 8, 1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c1(x)
        y = torch.relu(self.pw(self.dw(y)) + y)
        return self.fc(self.pool(y).mean((2, 3)))


class SigmoidHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv(x))


def export(module: nn.Module, path: Path) -> Path:
    torch.manual_seed(0)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    module.eval()
    torch.onnx.export(
        module,
        (torch.randn(SHAPE),),
        str(path),
        input_names=["image"],
        output_names=["out"],
        opset_version=17,
        dynamo=False,
    )
    return path


def ort_quantize(float_path: Path, path: Path, *, activations: str = "int8", **kw) -> Path:
    """ONNX Runtime's quantize_static, QDQ format, per-channel int8 weights by default."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(1)
            data = [rng.standard_normal(SHAPE).astype(np.float32) for _ in range(8)]
            self.it = iter([{"image": d} for d in data])

        def get_next(self):
            return next(self.it, None)

    types = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    quantize_static(
        str(float_path),
        str(path),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=kw.pop("per_channel", True),
        activation_type=types[activations],
        weight_type=types[kw.pop("weights", "int8")],
        **kw,
    )
    return path


def initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    return numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == name))


def set_initializer(model: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    for i in model.graph.initializer:
        if i.name == name:
            i.CopyFrom(numpy_helper.from_array(value, name))
            return
    model.graph.initializer.append(numpy_helper.from_array(value, name))


def dq_of(model: onnx.ModelProto, output: str) -> onnx.NodeProto:
    """The DequantizeLinear node producing `output`."""
    return next(
        n for n in model.graph.node if n.op_type == "DequantizeLinear" and output in n.output
    )


def weight_dqs(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """DequantizeLinear nodes of int8 per-channel weights (rank ≥ 2), in graph order."""
    return [
        n
        for n in model.graph.node
        if n.op_type == "DequantizeLinear"
        and n.input[0] in {i.name for i in model.graph.initializer if len(i.dims) >= 2}
    ]


def requantize_activation(model: onnx.ModelProto, tensor: str, scale: float, zero: int) -> None:
    """Give `tensor`'s QuantizeLinear and its DequantizeLinear new, unshared parameters."""
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == tensor)
    dtype = initializer(model, q.input[2]).dtype
    s_name, z_name = f"{tensor}_edited_scale", f"{tensor}_edited_zero_point"
    set_initializer(model, s_name, np.array(scale, np.float32))
    set_initializer(model, z_name, np.array(zero, dtype))
    for n in model.graph.node:
        if n is q or (n.op_type == "DequantizeLinear" and n.input[0] == q.output[0]):
            n.input[1], n.input[2] = s_name, z_name
