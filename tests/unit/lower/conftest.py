"""Tiny torch models for the float lowering tests, their ONNX artifacts, and run helpers."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from bridge.artifact import OnnxArtifact, TfliteArtifact
from bridge.contract import IOContract, TensorSpec
from bridge.lower import lower
from bridge.runtime.feeds import random_feeds
from bridge.runtime.metrics import sqnr_db
from bridge.runtime.runners import LiteRTRunner, OrtRunner


class ConvNet(nn.Module):
    """NCHW image → (logits [1,10], feature map [1,8,16,16])."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = torch.relu(self.conv(x))
        return self.fc(feat.mean((2, 3))), feat


class SeqNet(nn.Module):
    """[batch, time, features] = [1,16,32] → [1,16,8] via Linear, LayerNorm, Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(32, 32)
        self.norm = nn.LayerNorm(32)
        self.out = nn.Linear(32, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(torch.relu(self.inp(x))))


class MultiIO(nn.Module):
    """Four inputs, three outputs, names not in sorted order. Two inputs of equal shape are used
    asymmetrically so a swap changes the numbers, and a plain 3-D input sits next to a conv,
    where onnx2tf would otherwise transpose it as if it were NCW."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.proj = nn.Linear(5, 4)

    def forward(
        self, image: torch.Tensor, context: torch.Tensor, bias: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        v = self.proj(context - 2.0 * bias)  # [1,4]
        fmap = self.conv(image) + v[:, :, None, None]  # [1,4,8,8]
        score = tokens * 3.0 + bias[:, None, :]  # [1,6,5]
        return score, fmap.sum((2, 3)), fmap


class Conv1dNet(nn.Module):
    """NCW signal [1,4,32] → [1,6,32]."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(4, 6, 3, padding=1)
        self.c2 = nn.Conv1d(6, 6, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c2(torch.relu(self.c1(x)))


class WideConvNet(nn.Module):
    """About 150k parameters, for the float16 size check."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 32, 3, padding=1)
        self.c2 = nn.Conv2d(32, 64, 3, stride=2, padding=1)
        self.c3 = nn.Conv2d(64, 128, 3, stride=2, padding=1)
        self.fc = nn.Linear(128, 300)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.c1(x))
        x = torch.relu(self.c2(x))
        x = torch.relu(self.c3(x))
        return self.fc(x.mean((2, 3)))


def export_artifact(
    module: nn.Module,
    inputs: Sequence[tuple[str, tuple[int, ...], str]],
    outputs: Sequence[tuple[str, str]],
    *,
    seed: int = 0,
    dynamic_batch: bool = False,
) -> OnnxArtifact:
    """Export `module` (opset 17, TorchScript exporter) with a hand-built I/O contract.

    Args:
        inputs: (name, shape, layout) per forward argument.
        outputs: (name, layout) per returned tensor; shapes come from running the module.
        dynamic_batch: make dimension 0 symbolic (None in the contract).
    """
    torch.manual_seed(seed)
    module = module.eval()
    for p in module.parameters():  # non-trivial biases too
        torch.nn.init.normal_(p, 0.0, 0.3)
    args = tuple(torch.randn(*shape) for _, shape, _ in inputs)
    with torch.no_grad():
        result = module(*args)
    results = result if isinstance(result, tuple) else (result,)
    names_in = [n for n, _, _ in inputs]
    names_out = [n for n, _ in outputs]
    axes = {n: {0: "batch"} for n in [*names_in, *names_out]} if dynamic_batch else None
    buf = io.BytesIO()
    torch.onnx.export(
        module,
        args,
        buf,
        input_names=names_in,
        output_names=names_out,
        opset_version=17,
        dynamo=False,
        dynamic_axes=axes,
    )

    def shape(s: Sequence[int]) -> tuple[int | None, ...]:
        return (None, *s[1:]) if dynamic_batch else tuple(s)

    contract = IOContract(
        tuple(TensorSpec(n, shape(s), "float32", lay) for n, s, lay in inputs),
        tuple(
            TensorSpec(n, shape(tuple(r.shape)), "float32", lay)
            for (n, lay), r in zip(outputs, results, strict=True)
        ),
    )
    return OnnxArtifact(onnx.load_from_string(buf.getvalue()), contract)


def interpreter_io(data: bytes) -> tuple[list[tuple], list[tuple]]:
    """(inputs, outputs) of a .tflite as the interpreter lists them: (name, shape, dtype)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=data)

    def rows(details: list[dict]) -> list[tuple]:
        return [
            (
                d["name"],
                tuple(int(x) if x >= 0 else None for x in d["shape_signature"]),
                np.dtype(d["dtype"]).name,
            )
            for d in details
        ]

    return rows(interp.get_input_details()), rows(interp.get_output_details())


def contract_io(contract: IOContract) -> tuple[list[tuple], list[tuple]]:
    """A contract's (inputs, outputs) in the same form as `interpreter_io`."""
    return (
        [(s.name, tuple(s.shape), s.dtype) for s in contract.inputs],
        [(s.name, tuple(s.shape), s.dtype) for s in contract.outputs],
    )


def sqnr_vs_ort(artifact: OnnxArtifact, tfl: TfliteArtifact, *, batch: int = 1) -> dict[str, float]:
    """SQNR (dB) of LiteRT's outputs against ONNX Runtime's, per output, on seeded inputs."""
    feeds = random_feeds(artifact.contract, seed=1, batch=batch)
    ref = OrtRunner(artifact.model, artifact.contract).run(feeds)
    got = LiteRTRunner(tfl.data, tfl.contract, user_contract=artifact.contract).run(feeds)
    return {name: sqnr_db(ref[name], got[name]) for name in artifact.contract.output_names}


class Tools:
    """The helpers above, as one fixture: tools.export(...), tools.io(...), tools.sqnr(...)."""

    export = staticmethod(export_artifact)
    io = staticmethod(interpreter_io)
    contract_io = staticmethod(contract_io)
    sqnr = staticmethod(sqnr_vs_ort)
    ConvNet = ConvNet
    SeqNet = SeqNet


@pytest.fixture(scope="session")
def tools() -> type[Tools]:
    return Tools


# ONNX artifacts (exported once per session) and their lowerings, shared by the test files.


@pytest.fixture(scope="session")
def conv_art() -> OnnxArtifact:
    return export_artifact(
        ConvNet(), [("x", (1, 3, 16, 16), "NCHW")], [("logits", "plain"), ("feat", "NCHW")]
    )


@pytest.fixture(scope="session")
def seq_art() -> OnnxArtifact:
    return export_artifact(SeqNet(), [("x", (1, 16, 32), "plain")], [("y", "plain")])


@pytest.fixture(scope="session")
def multi_art() -> OnnxArtifact:
    return export_artifact(
        MultiIO(),
        [
            ("image", (1, 3, 8, 8), "NCHW"),
            ("context", (1, 5), "plain"),
            ("bias", (1, 5), "plain"),
            ("tokens", (1, 6, 5), "plain"),
        ],
        [("score", "plain"), ("embedding", "plain"), ("aux", "NCHW")],
    )


@pytest.fixture(scope="session")
def conv1d_art() -> OnnxArtifact:
    return export_artifact(Conv1dNet(), [("signal", (1, 4, 32), "NCW")], [("y", "NCW")])


@pytest.fixture(scope="session")
def wide_art() -> OnnxArtifact:
    return export_artifact(
        WideConvNet(), [("image", (1, 3, 32, 32), "NCHW")], [("logits", "plain")]
    )


@pytest.fixture(scope="session")
def conv_fp32(conv_art: OnnxArtifact) -> TfliteArtifact:
    return lower(conv_art, mode="fp32")


@pytest.fixture(scope="session")
def conv_nhwc(conv_art: OnnxArtifact) -> TfliteArtifact:
    return lower(conv_art, mode="fp32", nhwc=True)


@pytest.fixture(scope="session")
def wide_fp32(wide_art: OnnxArtifact) -> TfliteArtifact:
    return lower(wide_art, mode="fp32")


@pytest.fixture(scope="session")
def wide_fp16(wide_art: OnnxArtifact) -> TfliteArtifact:
    return lower(wide_art, mode="fp16")
