"""runtime.tflite_io: flatbuffer load/save round trip, and the structural checks that keep a
corrupted .tflite from reaching (and crashing) LiteRT."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.errors import ModelLoadError
from bridge.runtime import tflite_io
from tests.unit.lower.graph_builders import F32, add_op, new_graph

W = np.arange(12, dtype=np.float32).reshape(3, 4)


def _model():
    g = new_graph()
    x = g.add_tensor("x", [1, 4], F32)
    w = g.add_tensor("w", W.shape, F32, data=W)
    h = g.add_tensor("h", [1, 3], F32)
    y = g.add_tensor("y", [1, 3], F32)
    g.ops = [g.new_op("FULLY_CONNECTED", [x, w, -1], [h], 1)]
    add_op(g, "RELU", [h], [y])
    g.sg.inputs, g.sg.outputs = [x], [y]
    g.commit()
    return g.model


def test_save_load_round_trip() -> None:
    data = tflite_io.save(_model())
    assert data[4:8] == b"TFL3"
    model = tflite_io.load(data)
    tflite_io.check_indices(model)
    assert tflite_io.op_histogram(data) == {"FULLY_CONNECTED": 1, "RELU": 1}
    sg = model.subgraphs[0]
    names = [tflite_io.tensor_name(t) for t in sg.tensors]
    assert names == ["x", "w", "h", "y"]
    np.testing.assert_array_equal(tflite_io.buffer_array(model, sg.tensors[1]), W)
    assert tflite_io.buffer_array(model, sg.tensors[0]) is None
    assert tflite_io.op_name(model, sg.operators[1]) == "RELU"


def test_bytes_that_are_not_tflite_are_refused() -> None:
    with pytest.raises(ModelLoadError, match="'TFL3' missing"):
        tflite_io.load(b"\x00" * 64)
    data = tflite_io.save(_model())
    with pytest.raises(ModelLoadError, match="corrupt or truncated"):
        tflite_io.load(data[: len(data) // 3])


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda m: setattr(m.subgraphs[0].tensors[0], "buffer", 99), "buffer index 99"),
        (lambda m: setattr(m.subgraphs[0].operators[0], "opcodeIndex", 7), "operator code 7"),
        (
            lambda m: setattr(m.subgraphs[0], "outputs", np.array([12], np.int32)),
            r"tensor index out of range in \[12\]",
        ),
        (lambda m: setattr(m, "subgraphs", []), "no subgraphs"),
    ],
)
def test_check_indices_finds_out_of_range_indices(corrupt, message: str) -> None:
    model = _model()
    tflite_io.check_indices(model)
    corrupt(model)
    with pytest.raises(ModelLoadError, match=message):
        tflite_io.check_indices(model)
