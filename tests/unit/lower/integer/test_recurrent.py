"""integer.recurrent.float_interior: the TFLite tensors onnx2tf unrolled a float LSTM into stay
float; the layer's output too when a float op reads it unquantized in the QDQ model."""

from __future__ import annotations

import numpy as np
from onnx import helper

from bridge.lower.integer.recurrent import float_interior
from tests.unit.lower.graph_builders import F32, add_op, new_graph

W = np.ones((4, 4), np.float32)


def _qdq(*, y_readers: tuple[str, ...] = ("QuantizeLinear",), lstm_input: str = "x"):
    """x ─Q─DQ→ xd ─LSTM→ Y, Y read by `y_readers`."""
    nodes = [
        helper.make_node("QuantizeLinear", [lstm_input, "s", "z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
        helper.make_node("LSTM", ["xd", "W", "R"], ["Y"], hidden_size=4),
        *(helper.make_node(op, ["Y"], [f"r{i}"]) for i, op in enumerate(y_readers)),
    ]
    return helper.make_model(helper.make_graph(nodes, "g", [], []))


def _unrolled():
    """x ─FC→ gates ─TANH→ h ─FC→ Y ─RELU→ out: the LSTM as onnx2tf writes it."""
    g = new_graph()
    names = ["x", "gates", "h", "Y", "out"]
    t = {n: g.add_tensor(n, [1, 4], F32) for n in names}
    w = g.add_tensor("w", [4, 4], F32, data=W)
    g.ops = [g.new_op("FULLY_CONNECTED", [t["x"], w, -1], [t["gates"]], 1)]
    add_op(g, "TANH", [t["gates"]], [t["h"]])
    g.ops.append(g.new_op("FULLY_CONNECTED", [t["h"], w, -1], [t["Y"]], 1))
    add_op(g, "RELU", [t["Y"]], [t["out"]])
    g.sg.inputs, g.sg.outputs = [t["x"]], [t["out"]]
    return g, t


def test_interior_between_the_inputs_qdq_and_a_quantized_output() -> None:
    g, t = _unrolled()
    assert float_interior(g, _qdq()) == {t["gates"], t["h"]}


def test_an_output_a_float_op_reads_stays_float_too() -> None:
    g, t = _unrolled()
    got = float_interior(g, _qdq(y_readers=("QuantizeLinear", "Relu")))
    assert got == {t["gates"], t["h"], t["Y"]}


def test_a_walk_that_escapes_to_a_graph_input_adds_nothing() -> None:
    g, _ = _unrolled()
    assert float_interior(g, _qdq(lstm_input="renamed")) == set()


def test_no_recurrent_node_no_interior() -> None:
    g, _ = _unrolled()
    model = helper.make_model(
        helper.make_graph([helper.make_node("Relu", ["x"], ["Y"])], "g", [], [])
    )
    assert float_interior(g, model) == set()
