"""int8_graph.Graph, the integer lowering's TFLite editor: queries, added tensors and ops that
LiteRT runs, opcode reuse, rewiring, and pruning of what became unused."""

from __future__ import annotations

import numpy as np

from bridge.lower.int8_graph import quantization
from bridge.runtime.metrics import sqnr_db
from bridge.runtime.tolerances import FP32_MIN_SQNR_DB
from tests.unit.lower.int8_builders import F32, add_op, new_graph, op_types, run

RNG = np.random.default_rng(0)
W = RNG.standard_normal((3, 4)).astype(np.float32)
B = RNG.standard_normal(3).astype(np.float32)
X = RNG.standard_normal((2, 4)).astype(np.float32)


def _linear():
    """x [2,4] ─FULLY_CONNECTED(W, b)→ y [2,3]."""
    g = new_graph()
    x = g.add_tensor("x", [2, 4], F32)
    w = g.add_tensor("w", W.shape, F32, data=W)
    b = g.add_tensor("b", B.shape, F32, data=B)
    y = g.add_tensor("y", [2, 3], F32)
    fc = g.new_op("FULLY_CONNECTED", [x, w, b], [y], 1)
    g.ops.append(fc)
    g.sg.inputs, g.sg.outputs = [x], [y]
    return g, fc, {"x": x, "w": w, "b": b, "y": y}


def test_added_ops_and_constants_run_in_litert() -> None:
    g, _, _ = _linear()
    (y,) = run(g, X)
    assert sqnr_db(X @ W.T + B, y) >= FP32_MIN_SQNR_DB


def test_queries() -> None:
    g, fc, t = _linear()
    np.testing.assert_array_equal(g.constant(t["w"]), W)
    assert g.constant(t["x"]) is None and g.constant(-1) is None
    assert g.is_constant(t["b"]) and not g.is_constant(t["y"])
    assert g.is_float_activation(t["x"]) and not g.is_float_activation(t["w"])
    assert g.producers() == {t["y"]: fc}
    assert g.consumers()[t["x"]] == [fc] and t["y"] not in g.consumers()
    assert g.name(t["w"]) == "w" and g.op_type(fc) == "FULLY_CONNECTED"
    assert (g.inputs, g.outputs) == ([t["x"]], [t["y"]])


def test_opcodes_are_reused_per_type_and_version() -> None:
    g = new_graph()
    relu1, relu1_again, relu2 = g.opcode("RELU", 1), g.opcode("RELU", 1), g.opcode("RELU", 2)
    assert relu1 == relu1_again != relu2
    assert len(g.model.operatorCodes) == 2


def test_replace_input_then_commit_prunes_tensors_buffers_and_opcodes() -> None:
    g, fc, t = _linear()
    relu_in = g.add_tensor("r", [2, 4], F32)
    add_op(g, "RELU", [t["x"]], [relu_in])
    g.ops.insert(0, g.ops.pop())
    g.replace_input(t["x"], relu_in, only=[fc])
    unused_const = g.add_tensor("dead", [5], F32, data=np.ones(5, np.float32))
    g.opcode("TANH", 1)  # an opcode no operator uses
    assert unused_const == 5 and len(g.model.buffers) == 4
    (y,) = run(g, X)
    assert sqnr_db(np.maximum(X, 0) @ W.T + B, y) >= FP32_MIN_SQNR_DB
    assert sqnr_db(X @ W.T + B, y) < FP32_MIN_SQNR_DB  # the RELU is really read
    assert op_types(g) == ["RELU", "FULLY_CONNECTED"]
    assert len(g.sg.tensors) == 5 and len(g.model.buffers) == 3  # dead tensor and its buffer
    assert sorted(g.op_type(op) for op in g.ops) == ["FULLY_CONNECTED", "RELU"]
    assert len(g.model.operatorCodes) == 2  # TANH went


def test_set_constant_retypes_in_a_fresh_buffer() -> None:
    g, _, t = _linear()
    before = g.tensor(t["w"]).buffer
    q = quantization([0.5, 0.25, 0.125], [0, 0, 0], axis=0)
    levels = np.arange(-6, 6, dtype=np.int8).reshape(W.shape)
    g.set_constant(t["w"], levels, 9, q)
    assert g.tensor(t["w"]).buffer != before and g.tensor(t["w"]).type == 9
    assert g.tensor(t["w"]).quantization is q
    np.testing.assert_array_equal(g.constant(t["w"]), levels)


def test_quantization_table() -> None:
    q = quantization([0.5, 2.0], [3, -1], axis=3)
    assert q.scale.dtype == np.float32 and q.scale.tolist() == [0.5, 2.0]
    assert q.zeroPoint.dtype == np.int64 and q.zeroPoint.tolist() == [3, -1]
    assert q.quantizedDimension == 3
