"""fuse_activation: clamps and hard-swish patterns take one canonical form."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from bridge.passes.fuse_activation import fuse_activation

#: Clamp rewrites are exact: clamping twice equals clamping once to the intersection.
EXACT = 0.0
#: HardSwish computes x·clip(x/6 + 1/2, 0, 1) in its own kernel; an ulp or two may differ.
HARD_SWISH_MAX_ABS = 1e-6


def _clip_bounds(model: onnx.ModelProto, node: onnx.NodeProto) -> tuple[float, float]:
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    lo, hi = (inits[name] if name else None for name in node.input[1:3])
    assert lo is not None and hi is not None and lo.ndim == 0 and hi.ndim == 0
    return float(lo), float(hi)


def test_relu6_forms_become_one_clip(g):
    n = g.node
    model = g.model(
        [
            n("Conv", ["x", "w"], ["c"]),
            n("Constant", [], ["lo"], value=numpy_helper.from_array(np.array([0.0], np.float32))),
            n("Clip", ["c", "lo", "six"], ["a"]),  # 1-element bounds from a Constant
            n("Max", ["x", "zero"], ["m"]),
            n("Min", ["m", "six"], ["b"]),  # Min(Max(x, 0), 6)
            n("Relu", ["x"], ["r"]),
            n("Clip", ["r", "", "six"], ["d"]),  # Relu then min 6
        ],
        {"x": [1, 2, 4, 4]},
        {"a": [1, 2, 4, 4], "b": [1, 2, 4, 4], "d": [1, 2, 4, 4]},
        {"w": g.rand(2, 2, 1, 1), "zero": np.array(0.0, np.float32), "six": np.float32(6.0)},
    )
    before = g.ort(model)
    result = fuse_activation(model)
    assert result.count == 3
    assert g.ops(result.model) == ["Conv", "Constant", "Clip", "Clip", "Clip"]
    clips = [node for node in result.model.graph.node if node.op_type == "Clip"]
    assert [_clip_bounds(result.model, c) for c in clips] == [(0.0, 6.0)] * 3
    assert [c.output[0] for c in clips] == ["a", "b", "d"]
    assert g.diff(before, g.ort(result.model)) <= EXACT
    assert result.hints["activations"] == {"relu6": 3}
    assert result.hints["fusable_into_producer"] == 1  # the Conv's
    again = fuse_activation(result.model)
    assert (again.modified, again.count) == (False, 0)


def test_clip_without_upper_bound_and_max_zero_become_relu(g):
    n = g.node
    model = g.model(
        [n("Clip", ["x", "zero"], ["a"]), n("Max", ["zero", "x"], ["b"])],
        {"x": [3, 4]},
        {"a": [3, 4], "b": [3, 4]},
        {"zero": np.array(0.0, np.float32)},
    )
    before = g.ort(model)
    result = fuse_activation(model)
    assert result.count == 2
    assert g.ops(result.model) == ["Relu", "Relu"]
    assert g.diff(before, g.ort(result.model)) <= EXACT


def test_x_times_hard_sigmoid_becomes_hard_swish_and_swish_stays(g):
    n = g.node
    model = g.model(
        [
            n("HardSigmoid", ["x"], ["h"], alpha=1 / 6, beta=0.5),
            n("Mul", ["x", "h"], ["a"]),
            n("Sigmoid", ["x"], ["s"]),
            n("Mul", ["s", "x"], ["b"]),
        ],
        {"x": [2, 8]},
        {"a": [2, 8], "b": [2, 8]},
    )
    before = g.ort(model)
    result = fuse_activation(model)
    assert result.count == 1
    assert g.ops(result.model) == ["HardSwish", "Sigmoid", "Mul"]
    assert g.io(result.model) == g.io(model)
    assert g.diff(before, g.ort(result.model)) <= HARD_SWISH_MAX_ABS
    assert result.hints["activations"] == {"hard_swish": 1, "swish": 1}


def test_other_hard_sigmoid_and_lone_min_are_left_alone(g):
    n = g.node
    model = g.model(
        [
            n("HardSigmoid", ["x"], ["h"]),  # default alpha 0.2: not hard-swish
            n("Mul", ["x", "h"], ["a"]),
            n("Min", ["x", "six"], ["b"]),
        ],
        {"x": [2, 8]},
        {"a": [2, 8], "b": [2, 8]},
        {"six": np.array(6.0, np.float32)},
    )
    result = fuse_activation(model)
    assert (result.modified, result.count) == (False, 0)


def test_chain_of_relus_becomes_one(g):
    n = g.node
    model = g.model(
        [n("Relu", ["x"], ["a"]), n("Relu", ["a"], ["b"]), n("Relu", ["b"], ["y"])],
        {"x": [2, 3]},
        {"y": [2, 3]},
    )
    before = g.ort(model)
    result = fuse_activation(model)
    assert result.count == 1
    assert g.ops(result.model) == ["Relu"]
    assert result.model.graph.node[0].output == ["y"]
    assert g.diff(before, g.ort(result.model)) <= EXACT
