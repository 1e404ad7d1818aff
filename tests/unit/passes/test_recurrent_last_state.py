"""recurrent_last_state: a recurrent layer's Y_h is read from the last step of its Y.

The graph tests check the rewrite count, op types and ONNX Runtime numbers (Y_h is exactly the
last step of Y, so the rewrite is exact); the cases it must leave alone keep their Y_h.
"""

from __future__ import annotations

import numpy as np
import pytest

from bridge.passes import PASSES, run_passes
from bridge.passes.recurrent_last_state import recurrent_last_state

EXACT = 0.0
T, B, F, H = 5, 2, 3, 4
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def _recurrent(g, op, *, direction="forward", outputs=("", "h"), sequence_lens=False):
    """X [T, B, F] → op → graph outputs `outputs` (Y, Y_h[, Y_c]); a Relu also reads Y_h."""
    d = 2 if direction == "bidirectional" else 1
    k = GATES[op]
    inits = {
        "W": g.rand(d, k * H, F, seed=1),
        "R": g.rand(d, k * H, H, seed=2),
        "Bias": g.rand(d, 2 * k * H, seed=3),
    }
    inputs = ["x", "W", "R", "Bias"]
    if sequence_lens:
        inits["lens"] = np.full(B, T, dtype=np.int32)
        inputs.append("lens")
    node = g.node(op, inputs, list(outputs), hidden_size=H, direction=direction, name="rnn")
    nodes = [node]
    if "h" in outputs:
        nodes.append(g.node("Relu", ["h"], ["h_relu"], name="relu"))
        outputs = (*outputs, "h_relu")
    shapes = {"y": [T, d, B, H], "h": [d, B, H], "c": [d, B, H], "h_relu": [d, B, H]}
    graph_out = {n: shapes[n] for n in outputs if n}
    return g.model(nodes, {"x": [T, B, F]}, graph_out, inits)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_y_h_is_read_from_the_last_step_of_y(g, op, direction):
    model = _recurrent(g, op, direction=direction)
    before = g.ort(model)
    result = recurrent_last_state(model)
    assert (result.count, result.hints) == (1, {"recurrent_last_state": 1})
    slices = 2 if direction == "bidirectional" else 1
    expected = [op] + ["Slice", "Squeeze"] * slices + ["Concat"] * (slices - 1) + ["Relu"]
    assert g.ops(result.model) == expected
    assert g.io(result.model) == g.io(model)
    rnn = result.model.graph.node[0]
    assert list(rnn.output) == ["h__sequence"]  # Y_h is no longer computed by the layer
    assert g.diff(before, g.ort(result.model)) <= EXACT


def test_lstm_reading_h_and_c_keeps_y_c_in_its_place(g):
    """onnx2tf drops empty output names: Y_h keeps a name so Y_c stays output 2."""
    model = _recurrent(g, "LSTM", outputs=("y", "h", "c"))
    before = g.ort(model)
    result = recurrent_last_state(model)
    assert result.count == 1
    rnn = result.model.graph.node[0]
    assert list(rnn.output) == ["y", "h__unread", "c"]
    assert g.diff(before, g.ort(result.model)) <= EXACT


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"outputs": ("y",)}, "no Y_h"),
        ({"sequence_lens": True}, "rows may stop early"),
    ],
)
def test_layers_it_must_leave_alone(g, kwargs, why):
    model = _recurrent(g, "LSTM", **kwargs)
    result = recurrent_last_state(model)
    assert (result.count, result.modified) == (0, False), why


def test_is_a_default_pass(g):
    model = _recurrent(g, "GRU")
    artifact = run_passes(g.artifact(model))
    entry = next(e for e in artifact.facts["passes"] if e["name"] == "recurrent_last_state")
    assert entry["count"] == 1
    assert "recurrent_last_state" in PASSES.names()
