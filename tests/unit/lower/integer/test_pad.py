"""integer.pad.plain_pads: an int8 PADV2 whose pad value is its output's zero point becomes a
PAD with the same result in LiteRT; any other PADV2 stays."""

from __future__ import annotations

import numpy as np

from bridge.lower.integer import kernels
from bridge.lower.integer.pad import plain_pads
from bridge.lower.tflite_graph import quantization
from tests.unit.lower.graph_builders import I8, I32, add_op, new_graph, op_types, run

ZERO = -128
X = np.arange(-120, 120, 20, dtype=np.int8).reshape(1, 2, 2, 3)
PADS = np.array([[0, 0], [1, 1], [0, 2], [0, 0]], np.int32)


def _padv2(value: int, *, zero: int = ZERO):
    g = new_graph()
    q = quantization(0.05, zero)
    x = g.add_tensor("x", X.shape, I8, quant=q)
    p = g.add_tensor("pads", PADS.shape, I32, data=PADS)
    # LiteRT reads an unquantized pad value as garbage: it carries the output's parameters
    v = g.add_tensor("value", [1], I8, quant=q, data=np.array([value], np.int8))
    y = g.add_tensor("y", [1, 4, 4, 3], I8, quant=quantization(0.05, zero))
    op = add_op(g, "PADV2", [x, p, v], [y], table="PadV2")
    op.opcodeIndex = g.opcode("PADV2", kernels.kernel("PADV2").int8)
    g.sg.inputs, g.sg.outputs = [x], [y]
    return g, {id(op)}


def test_padv2_with_the_zero_point_becomes_pad() -> None:
    g, integer = _padv2(ZERO)
    assert plain_pads(g, integer) == 1
    assert op_types(g) == ["PAD"]
    assert integer == {id(g.ops[0])}
    version = kernels.kernel("PAD").int8
    assert g.model.operatorCodes[g.ops[0].opcodeIndex].version == version
    (y,) = run(g, X)
    np.testing.assert_array_equal(y, np.pad(X, PADS, constant_values=ZERO))


def test_padv2_with_another_value_stays() -> None:
    g, integer = _padv2(-100)
    assert plain_pads(g, integer) == 0
    assert op_types(g) == ["PADV2"]
    (y,) = run(g, X)
    np.testing.assert_array_equal(y, np.pad(X, PADS, constant_values=-100))


def test_float_padv2_is_not_touched() -> None:
    g, _ = _padv2(ZERO)
    assert plain_pads(g, set()) == 0
    assert op_types(g) == ["PADV2"]
