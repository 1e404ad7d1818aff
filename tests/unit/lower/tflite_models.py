"""Hand-built TFLite flatbuffers for the lowering's unit tests."""

from __future__ import annotations

from typing import Any

from bridge.runtime import tflite_io


def empty_model() -> Any:
    """A `ModelT` with one empty subgraph and the empty buffer 0, to build ops into."""
    s = tflite_io.schema()
    model = s.ModelT()
    model.version = 3
    model.operatorCodes, model.buffers = [], [s.BufferT()]
    sg = s.SubGraphT()
    sg.tensors, sg.operators, sg.inputs, sg.outputs = [], [], [], []
    model.subgraphs = [sg]
    return model
