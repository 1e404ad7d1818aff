"""onnx2tf recurrent-output workarounds (bridge/lower/floating/recurrent_outputs.py).

Both rewrites change only the ONNX handed to onnx2tf, so ONNX Runtime must give the same numbers
before and after; the rewrite counts and op types are asserted too.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from bridge.lower.floating import recurrent_outputs

HIDDEN, FEATURES, BATCH = 3, 4, 2


def _model(op: str, steps: int, outputs: list[str], direction: str = "forward") -> onnx.ModelProto:
    gates = {"LSTM": 4, "GRU": 3}[op]
    dirs = 2 if direction == "bidirectional" else 1
    rng = np.random.default_rng(0)
    weights = {
        "W": rng.standard_normal((dirs, gates * HIDDEN, FEATURES)),
        "R": rng.standard_normal((dirs, gates * HIDDEN, HIDDEN)),
        "B": rng.standard_normal((dirs, 2 * gates * HIDDEN)),
    }
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()]
    node = helper.make_node(
        op, ["x", "W", "R", "B"], outputs, hidden_size=HIDDEN, direction=direction, name="rnn"
    )
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [steps, BATCH, FEATURES])
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs if o]
    graph = helper.make_graph([node], "g", [x], outs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})


@pytest.mark.parametrize(
    ("op", "outputs", "named"),
    [
        ("LSTM", ["", "", "c"], ["rnn__unread0", "rnn__unread1", "c"]),
        ("LSTM", ["y", "", "c"], ["y", "rnn__unread1", "c"]),
        ("LSTM", ["y", "h"], ["y", "h"]),
        ("GRU", ["", "h"], ["rnn__unread0", "h"]),
    ],
)
def test_skipped_outputs_are_named(op, outputs, named):
    model = _model(op, 5, outputs)
    out, changed = recurrent_outputs.name_skipped_outputs(model)
    assert list(out.graph.node[0].output) == named
    assert changed == ([] if named == outputs else ["rnn"])
    assert (out is model) == (named == outputs)
    x = np.random.default_rng(1).standard_normal((5, BATCH, FEATURES)).astype(np.float32)
    for a, b in zip(_run(model, x), _run(out, x), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("steps", "outputs", "direction", "padded"),
    [
        (1, ["y", "h"], "forward", True),
        (1, ["y"], "forward", True),
        (1, ["", "h"], "forward", True),
        (2, ["y", "h"], "forward", False),
        (1, ["y", "h"], "reverse", False),
    ],
)
def test_one_step_gru_runs_two_steps_with_the_same_numbers(steps, outputs, direction, padded):
    model = _model("GRU", steps, outputs, direction)
    out, names = recurrent_outputs.pad_single_step_grus(model)
    assert names == (["rnn"] if padded else [])
    ops = [n.op_type for n in out.graph.node]
    expected = ["Concat", "GRU", "Slice"] + (["Reshape"] if outputs[1:] and outputs[1] else [])
    assert ops == (expected if padded else ["GRU"])
    x = np.random.default_rng(2).standard_normal((steps, BATCH, FEATURES)).astype(np.float32)
    for a, b in zip(_run(model, x), _run(out, x), strict=True):
        assert a.shape == b.shape
        np.testing.assert_array_equal(a, b)  # the first step is the same arithmetic
