"""SegmentedGraph: pieces cut after chosen nodes reproduce the whole graph, and an edit of a cut
output reaches every later node (a skip connection included)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bridge.quantize.segments import SegmentedGraph
from bridge.runtime.runners import OrtRunner

from .conftest import artifact_from_onnx

#: float32 rounding of the same ops run in pieces or whole (ORT may pick other kernels).
TOL = 1e-5


def residual_model(bias_shift: float = 0.0) -> onnx.ModelProto:
    """x → Conv a → Relu → Conv b → ·4 → Add(x) → Relu → y (4 channels; 4 = a constant node)."""
    rng = np.random.default_rng(0)
    w_a = rng.standard_normal((4, 4, 3, 3)).astype(np.float32) * 0.3
    w_b = rng.standard_normal((4, 4, 1, 1)).astype(np.float32) * 0.5
    inits = [
        numpy_helper.from_array(w_a, "wa"),
        numpy_helper.from_array(np.full(4, bias_shift, np.float32), "ba"),
        numpy_helper.from_array(w_b, "wb"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "bb"),
        numpy_helper.from_array(np.array(2.0, np.float32), "two"),
    ]
    nodes = [
        helper.make_node("Mul", ["two", "two"], ["four"], name="const"),  # constant-only node
        helper.make_node("Conv", ["x", "wa", "ba"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["ra"], name="relu_a"),
        helper.make_node("Conv", ["ra", "wb", "bb"], ["b"], name="conv_b"),
        helper.make_node("Mul", ["b", "four"], ["b4"], name="scale"),
        helper.make_node("Add", ["b4", "x"], ["s"], name="add"),
        helper.make_node("Relu", ["s"], ["y"], name="relu_y"),
    ]
    graph = helper.make_graph(
        nodes,
        "residual",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 5, 5])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def samples(n: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [{"x": rng.standard_normal((1, 4, 5, 5)).astype(np.float32)} for _ in range(n)]


def run_whole(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], names: list[str]):
    runner = OrtRunner(model, artifact_from_onnx(model).contract, extra_outputs=names)
    return [runner.run(f) for f in feeds]


def test_pieces_reproduce_the_whole_graph() -> None:
    model = residual_model()
    feeds = samples(3)
    seen: dict[int, list[np.ndarray]] = {}

    def keep(node: int, values: list[np.ndarray]) -> list[np.ndarray]:
        seen[node] = [v.copy() for v in values]
        return values

    SegmentedGraph(model, [1, 3, 6]).run(feeds, keep)
    whole = run_whole(model, feeds, ["a", "b", "y"])
    assert sorted(seen) == [1, 3, 6]
    for node, name in ((1, "a"), (3, "b"), (6, "y")):
        for got, ref in zip(seen[node], whole, strict=True):
            np.testing.assert_allclose(got, ref[name], rtol=TOL, atol=TOL)


def test_an_edit_reaches_every_later_node() -> None:
    """Adding 0.7 to conv a's output is conv a with bias 0.7: conv b, the skip Add and y see it."""
    feeds = samples(2)
    seen: list[np.ndarray] = []

    def edit(node: int, values: list[np.ndarray]) -> list[np.ndarray]:
        if node == 1:
            return [v + np.float32(0.7) for v in values]
        seen.extend(values)
        return values

    SegmentedGraph(residual_model(), [1, 6]).run(feeds, edit)
    shifted = run_whole(residual_model(bias_shift=0.7), feeds, [])
    for got, ref in zip(seen, shifted, strict=True):
        np.testing.assert_allclose(got, ref["y"], rtol=TOL, atol=TOL)


def test_bad_cuts_and_subgraphs_are_refused() -> None:
    with pytest.raises(ValueError, match="outside"):
        SegmentedGraph(residual_model(), [99])
    model = residual_model()
    body = helper.make_graph([], "body", [], [helper.make_tensor_value_info("x", 1, None)])
    model.graph.node.append(
        helper.make_node("If", ["x"], ["z"], then_branch=body, else_branch=body)
    )
    with pytest.raises(ValueError, match="subgraphs"):
        SegmentedGraph(model, [1])
