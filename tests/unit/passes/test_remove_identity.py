"""remove_identity: nodes that return their input unchanged are bypassed and removed."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from bridge.passes.infer_shapes import infer_shapes
from bridge.passes.remove_identity import remove_identity

#: Removing a no-op changes no value.
EXACT = 0.0


def test_removes_a_chain_of_no_ops_and_keeps_the_output_name(g):
    n = g.node
    model = g.model(
        [
            n("Identity", ["x"], ["a"]),
            n("Relu", ["a"], ["b"]),
            n("Dropout", ["b", "ratio"], ["c"]),  # no training_mode: inference
            n("Cast", ["c"], ["d"], to=TensorProto.FLOAT),
            n("Reshape", ["d", "same_shape"], ["e"]),
            n("Transpose", ["e"], ["f"], perm=[0, 1, 2, 3]),
            n("Mul", ["one", "f"], ["h"]),
            n("Add", ["h", "zero"], ["i"]),
            n("Pad", ["i", "no_pads"], ["j"]),
            n("Identity", ["j"], ["y"]),
        ],
        {"x": [1, 2, 3, 4]},
        {"y": [1, 2, 3, 4]},
        {
            "ratio": np.array(0.5, np.float32),
            "same_shape": np.array([1, 2, 3, 4], np.int64),
            "one": np.array(1.0, np.float32),
            "zero": np.zeros(4, np.float32),
            "no_pads": np.zeros(8, np.int64),
        },
    )
    model = infer_shapes(model).model  # the Reshape check needs the inferred shapes
    before = g.ort(model)
    result = remove_identity(model)
    assert result.count == 9
    assert g.ops(result.model) == ["Relu"]
    assert result.model.graph.node[0].output == ["y"]
    assert g.io(result.model) == g.io(model)
    assert g.diff(before, g.ort(result.model)) <= EXACT
    onnx.checker.check_model(result.model, full_check=True)


def test_keeps_nodes_that_change_values(g):
    n = g.node
    model = g.model(
        [
            n("Dropout", ["x", "ratio", "train"], ["a"]),  # training mode: not a no-op
            n("Transpose", ["a"], ["b"], perm=[1, 0]),
            n("Mul", ["b", "two"], ["c"]),
            n("Add", ["c", "wide_zero"], ["y"]),  # broadcasting enlarges the shape
        ],
        {"x": [3, 3]},
        {"y": [2, 3, 3]},
        {
            "ratio": np.array(0.5, np.float32),
            "train": np.array(True),
            "two": np.array(2.0, np.float32),
            "wide_zero": np.zeros((2, 3, 3), np.float32),
        },
    )
    result = remove_identity(model)
    assert (result.modified, result.count) == (False, 0)
    assert g.ops(result.model) == ["Dropout", "Transpose", "Mul", "Add"]


def test_identity_between_graph_io_is_kept(g):
    n = g.node
    model = g.model(
        [n("Identity", ["x"], ["y"]), n("Relu", ["x"], ["r"]), n("Identity", ["r"], ["z"])],
        {"x": [2]},
        {"y": [2], "r": [2], "z": [2]},
    )
    before = g.ort(model)
    result = remove_identity(model)
    # x → y links an input to an output; r → z would rename the output r: both stay.
    assert (result.modified, result.count) == (False, 0)
    assert g.diff(before, g.ort(result.model)) <= EXACT
