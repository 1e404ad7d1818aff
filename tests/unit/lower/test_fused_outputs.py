"""A graph output that also feeds an activation survives lowering (onnx2tf fuses it away)."""

from __future__ import annotations

from pathlib import Path

import torch

import bridge
from bridge.lower import graph_edit, tflite_io


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
    producers = graph_edit.producers(sg)
    assert all(int(t) in producers for t in sg.outputs)
    assert tflite_io.op_histogram(result.tflite_path.read_bytes())["RELU"] == 1
    pre = result.report["parity"]["torch_vs_tflite"]["pre"]
    assert pre["passed"] and pre["sqnr_db"] >= pre["min_sqnr_db"]
