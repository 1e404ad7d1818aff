"""Tiny models for the quantization tests, exported with the TorchScript exporter (opset 17)."""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from bridge.artifact import OnnxArtifact
from bridge.contract import IOContract, TensorSpec, guess_layout
from bridge.runtime.metrics import sqnr_db
from bridge.runtime.runners import OrtRunner


def _spec(vi: onnx.ValueInfoProto) -> TensorSpec:
    dims = tuple(
        d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim
    )
    dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type).name
    return TensorSpec(vi.name, dims, dtype, guess_layout(dims))


def artifact_from_onnx(model: onnx.ModelProto) -> OnnxArtifact:
    """An artifact whose contract is read from the model's typed graph inputs and outputs."""
    inits = {t.name for t in model.graph.initializer}
    inputs = tuple(_spec(i) for i in model.graph.input if i.name not in inits)
    outputs = tuple(_spec(o) for o in model.graph.output)
    return OnnxArtifact(model, IOContract(inputs, outputs), stage="passes")


def export(module: nn.Module, *shapes: tuple[int, ...]) -> OnnxArtifact:
    """torch → ONNX (opset 17, TorchScript exporter) → artifact with inputs x0, x1, ..."""
    torch.manual_seed(0)
    return export_tensors(module, *(torch.randn(*s) for s in shapes))


def export_tensors(module: nn.Module, *args: torch.Tensor) -> OnnxArtifact:
    """`export` on the given example tensors (any dtype): inputs x0, x1, ..., output y."""
    module.eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter warns about LSTM and tracing
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            buf,
            opset_version=17,
            dynamo=False,
            input_names=[f"x{i}" for i in range(len(args))],
            output_names=["y"],
            do_constant_folding=True,
        )
    return artifact_from_onnx(onnx.load_from_string(buf.getvalue()))


class SmallCNN(nn.Module):
    """conv-relu, maxpool, two branches concatenated, conv-relu6, global pool, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.a = nn.Conv2d(8, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.c1(x)))
        x = torch.cat([torch.relu(self.a(x)), self.b(x)], dim=1)
        x = nn.functional.relu6(self.dw(x))
        return self.fc(x.mean((2, 3)))


class Heads(nn.Module):
    """Sigmoid, tanh and softmax heads (fixed output qparams), a MatMul weight, a constant add
    and a division (float-only in TFLite int8)."""

    def __init__(self) -> None:
        super().__init__()
        self.f1, self.f2, self.f3 = nn.Linear(8, 6), nn.Linear(8, 6), nn.Linear(8, 6)
        self.w = nn.Parameter(torch.randn(8, 6) * 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        heads = torch.sigmoid(self.f1(x)) + torch.tanh(self.f2(x)) + torch.softmax(self.f3(x), -1)
        return heads + (x @ self.w + 0.5) / 3


class Seq(nn.Module):
    """An LSTM (float-only) between a transpose and a ReLU + linear."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 5, batch_first=True)
        self.fc = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.lstm(x)
        return self.fc(torch.relu(y))


class Up(nn.Module):
    """A grouped ConvTranspose (weight axis 1, bias repeated per group), resize, flatten."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(4, 4, 1)
        self.t = nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.t(torch.relu(self.c(x)))
        return nn.functional.interpolate(y, scale_factor=2, mode="nearest").flatten(1)


def build(cls: type[nn.Module], *shapes: tuple[int, ...]) -> OnnxArtifact:
    torch.manual_seed(0)
    return export(cls(), *shapes)


@pytest.fixture(scope="session")
def cnn() -> OnnxArtifact:
    return build(SmallCNN, (1, 3, 16, 16))


@pytest.fixture(scope="session")
def heads() -> OnnxArtifact:
    return build(Heads, (4, 8))


@pytest.fixture(scope="session")
def seq() -> OnnxArtifact:
    return build(Seq, (1, 7, 4))


@pytest.fixture(scope="session")
def up() -> OnnxArtifact:
    return build(Up, (1, 4, 5, 5))


def random_samples(artifact: OnnxArtifact, n: int, seed: int = 0) -> list[tuple[np.ndarray, ...]]:
    rng = np.random.default_rng(seed)
    return [
        tuple(
            rng.standard_normal(s.concrete_shape()).astype(np.float32)
            for s in artifact.contract.inputs
        )
        for _ in range(n)
    ]


def qdq_sqnr_over(
    art: OnnxArtifact,
    qdq: OnnxArtifact,
    samples: Sequence[tuple[np.ndarray, ...]],
    *,
    token: int | None = None,
) -> float:
    """SQNR (dB) of the QDQ model's first output against the float model's over `samples`
    (on one token of axis 1 if given)."""
    ref, q = OrtRunner(art.model, art.contract), OrtRunner(qdq.model, qdq.contract)
    names, out = art.contract.input_names, art.contract.output_names[0]
    pick = slice(None) if token is None else token
    refs, outs = [], []
    for sample in samples:
        feeds = dict(zip(names, sample, strict=True))
        refs.append(ref.run(feeds)[out][:, pick])
        outs.append(q.run(feeds)[out][:, pick])
    return sqnr_db(np.concatenate(refs), np.concatenate(outs))


def initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}


def activation_qparams(model: onnx.ModelProto) -> dict[str, tuple[float, int]]:
    """Float tensor fed to each QuantizeLinear → its (scale, zero point), read from the model."""
    inits = initializers(model)
    return {
        n.input[0]: (float(inits[n.input[1]]), int(inits[n.input[2]]))
        for n in model.graph.node
        if n.op_type == "QuantizeLinear"
    }


def dequantized_constants(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    """DequantizeLinear output name → node, for DequantizeLinear nodes of initializers."""
    inits = {t.name for t in model.graph.initializer}
    return {
        n.output[0]: n
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in inits
    }
