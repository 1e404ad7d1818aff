"""fold_constants: constant subgraphs and static Shape become initializers."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from bridge.passes.fold_constants import fold_constants

#: Folding evaluates the same float32 ops ahead of time: results are bit-identical.
EXACT = 0.0


def test_folds_constant_arithmetic_shape_and_constant_nodes(g):
    n = g.node
    model = g.model(
        [
            n("Constant", [], ["c2"], value=helper.make_tensor("v", 1, [4], [2.0] * 4)),
            n("Mul", ["c1", "c2"], ["scale"]),  # constant × constant
            n("Mul", ["x", "scale"], ["xs"]),
            n("Shape", ["x"], ["s"]),  # static shape
            n("Reshape", ["xs", "s"], ["y"]),
        ],
        {"x": [2, 4]},
        {"y": [2, 4]},
        {"c1": g.rand(4)},
    )
    before = g.ort(model)
    result = fold_constants(model)
    assert result.modified
    # Constant, Mul(c1, c2), Shape and the no-op Reshape are gone.
    assert result.count == 4, g.ops(result.model)
    assert g.ops(result.model) == ["Mul"]
    assert g.io(result.model) == g.io(model)
    assert g.diff(before, g.ort(result.model)) <= EXACT
    onnx.checker.check_model(result.model)


def test_identity_before_graph_output_keeps_the_output_name(g):
    n = g.node
    model = g.model(
        [n("Relu", ["x"], ["r"]), n("Identity", ["r"], ["y"]), n("Add", ["r", "one"], ["z"])],
        {"x": [1, 4]},
        {"y": [1, 4], "z": [1, 4]},
        {"one": np.ones(4, np.float32)},
    )
    before = g.ort(model)
    result = fold_constants(model)
    onnx.checker.check_model(result.model, full_check=True)  # single assignment kept
    assert g.io(result.model) == g.io(model)
    assert sorted(g.ops(result.model)) == ["Add", "Relu"]
    assert g.diff(before, g.ort(result.model)) <= EXACT


def test_graph_without_constants_is_unchanged(g):
    model = g.model([g.node("Relu", ["x"], ["y"])], {"x": [1, 4]}, {"y": [1, 4]})
    result = fold_constants(model)
    assert (result.modified, result.count) == (False, 0)
    assert result.model is model


def test_folds_the_pad_chain_torch_exports_for_f_pad(g):
    """F.pad exports ConstantOfShape → Concat → Reshape → Slice → Transpose → Cast → Pad."""
    import io

    import torch

    class Padded(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.pad(x, (0, 1, 0, 1)) * 2

    buf = io.BytesIO()
    torch.onnx.export(
        Padded(),
        (torch.randn(1, 2, 4, 4),),
        buf,
        input_names=["x"],
        output_names=["y"],
        opset_version=17,
        dynamo=False,
    )
    model = onnx.load_from_string(buf.getvalue())
    assert "ConstantOfShape" in g.ops(model)
    before = g.ort(model)
    result = fold_constants(model)
    assert g.ops(result.model) == ["Pad", "Mul"]
    assert g.diff(before, g.ort(result.model)) <= EXACT
