"""infer_shapes: value_info gets every intermediate tensor's type and shape."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from bridge.errors import PassError
from bridge.passes.infer_shapes import infer_shapes

#: Shape inference only annotates; values are untouched.
EXACT = 0.0


def test_fills_value_info_with_data_propagation(g):
    n = g.node
    model = g.model(
        [
            n("Relu", ["x"], ["r"]),
            n("Shape", ["r"], ["s"]),
            n("Gather", ["s", "zero"], ["batch"], axis=0),
            n("Unsqueeze", ["batch", "zero_axis"], ["b1"]),
            n("Concat", ["b1", "minus_one"], ["target"], axis=0),
            n("Reshape", ["r", "target"], ["y"]),
        ],
        {"x": [2, 3, 4]},
        {"y": ["a", "b"]},  # symbolic: inference refines it
        {
            "zero": np.array(0, np.int64),
            "zero_axis": np.array([0], np.int64),
            "minus_one": np.array([-1], np.int64),
        },
    )
    before = g.ort(model)
    result = infer_shapes(model)
    shapes = {
        vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
        for vi in [*result.model.graph.value_info, *result.model.graph.output]
    }
    assert shapes["r"] == [2, 3, 4]
    assert shapes["y"] == [2, 12]  # needs data propagation through Shape → Concat
    assert result.count == 6  # r, s, batch, b1, target, y
    assert g.ops(result.model) == g.ops(model)
    assert g.diff(before, g.ort(result.model)) <= EXACT
    again = infer_shapes(result.model)
    assert (again.modified, again.count) == (False, 0)


def test_type_conflict_raises_pass_error():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    i = helper.make_tensor_value_info("i", TensorProto.INT64, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    graph = helper.make_graph([helper.make_node("Add", ["x", "i"], ["y"])], "g", [x, i], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(PassError, match="infer_shapes"):
        infer_shapes(model)
