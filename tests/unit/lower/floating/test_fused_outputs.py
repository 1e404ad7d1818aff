"""A graph output that also feeds an activation survives lowering (onnx2tf fuses it away)."""

from __future__ import annotations

from pathlib import Path

import torch

import bridge
from bridge.lower import tflite_graph
from bridge.runtime import tflite_io


class OutputThenRelu(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(8, 8)
        self.b = torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pre = self.a(x) + x  # an ADD onnx2tf fuses the following RELU into
        return self.b(torch.relu(pre)), pre


def test_output_feeding_relu_keeps_its_producer(tmp_path: Path) -> None:
    torch.manual_seed(0)
    result = bridge.convert(
        OutputThenRelu().eval(),
        (torch.randn(1, 8),),
        tmp_path,
        input_names=["x"],
        output_names=["y", "pre"],
    )
    model = tflite_io.load(result.tflite_path.read_bytes())
    sg = model.subgraphs[0]
    producers = tflite_graph.producers(sg)
    assert all(int(t) in producers for t in sg.outputs)
    assert tflite_io.op_histogram(result.tflite_path.read_bytes())["RELU"] == 1
    pre = result.report["parity"]["torch_vs_tflite"]["pre"]
    assert pre["passed"] and pre["sqnr_db"] >= pre["min_sqnr_db"]


class ActivationOutputThenUnitTranspose(torch.nn.Module):
    """Fuzz seed 65535: the output is the activation's result and also feeds a transpose of unit
    axes, which onnx2tf drops by renaming; the fused MUL+RELU6 writes the transposed output."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.rand(1, 12, 1) + 0.5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        act = torch.nn.functional.relu6(x * self.w)
        return act.permute(0, 2, 1), act


def test_output_of_fused_activation_is_copied_not_unfused(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = ActivationOutputThenUnitTranspose().eval()
    x = torch.randn(1, 12, 1) * 4  # values on both sides of the RELU6 clamps
    result = bridge.convert(model, (x,), tmp_path, output_names=["t", "act"])
    tfl = tflite_io.load(result.tflite_path.read_bytes())
    sg = tfl.subgraphs[0]
    assert all(int(t) in tflite_graph.producers(sg) for t in sg.outputs)
    ops = tflite_io.op_histogram(result.tflite_path.read_bytes())
    assert "RELU6" not in ops, ops  # the activation stays fused: one copy, no second RELU6
    for name in ("t", "act"):
        got = result.report["parity"]["torch_vs_tflite"][name]
        assert got["passed"] and got["sqnr_db"] >= got["min_sqnr_db"], got
