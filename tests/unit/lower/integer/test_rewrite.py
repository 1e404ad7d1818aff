"""integer.rewrite.materialize: the plan written into the flatbuffer runs in LiteRT as the QDQ
model computes, with QUANTIZE/DEQUANTIZE only where the I/O type or a float op needs them."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper, numpy_helper

from bridge.lower.integer import kernels
from bridge.lower.integer.assign import ActQ, assign, check
from bridge.lower.integer.qdq import QdqModel
from bridge.lower.integer.rewrite import materialize, tensor_types
from bridge.qparams import QParams
from bridge.runtime.metrics import sqnr_db
from bridge.runtime.tolerances import FP32_MIN_SQNR_DB, INT8_MAX_LSB_P99
from tests.unit.lower.graph_builders import F32, add_op, new_graph, op_types, run

RNG = np.random.default_rng(0)
LEVELS = RNG.integers(-127, 128, (3, 4)).astype(np.int8)
W_SCALES = np.array([1 / 64, 1 / 128, 1 / 32], np.float32)
W = (LEVELS * W_SCALES[:, None]).astype(np.float32)
X = RNG.uniform(-2, 2, (1, 4)).astype(np.float32)
X_Q, H_Q = ActQ(4 / 255, 0), ActQ(1 / 8, 0)
Y_Q = ActQ(*kernels.kernel("LOGISTIC").fixed_output["int8"])


def _qp(a: ActQ) -> QParams:
    return QParams(np.float32([a.scale]), np.int64([a.zero_point]), "int8")


def _qdq(quantize_y: bool = True) -> QdqModel:
    graph = helper.make_graph([], "g", [], [], initializer=[numpy_helper.from_array(W, "W")])
    acts = {"x": _qp(X_Q), "h": _qp(H_Q), **({"y": _qp(Y_Q)} if quantize_y else {})}
    w = QParams(W_SCALES, np.zeros(3, np.int64), "int8", axis=0, narrow=True)
    return QdqModel(helper.make_model(graph), activations=acts, constants={"W": w})


def _lowered(io_dtype: str, *, quantize_y: bool = True):
    """x [1,4] ─FC(W)→ h ─LOGISTIC→ y, float, then assigned and materialized."""
    g = new_graph()
    x = g.add_tensor("x", [1, 4], F32)
    w = g.add_tensor("w", W.shape, F32, data=W)
    h = g.add_tensor("h", [1, 3], F32)
    y = g.add_tensor("y", [1, 3], F32)
    g.ops = [g.new_op("FULLY_CONNECTED", [x, w, -1], [h], 1)]
    add_op(g, "LOGISTIC", [h], [y])
    g.sg.inputs, g.sg.outputs = [x], [y]
    qdq = _qdq(quantize_y)
    matches = {x: ["x"], h: ["h"], y: ["y"]}
    plan = assign(g, matches, qdq, act_dtype="int8", onnx_order={"x": 0, "h": 1, "y": 2})
    check(g, plan, act_dtype="int8")
    return g, materialize(g, plan, qdq, act_dtype="int8", io_dtype=io_dtype)


def _qdq_reference() -> np.ndarray:
    """What the QDQ model computes: fake-quantized x, h and y."""
    x = _qp(X_Q).fake_quantize(X)
    h = _qp(H_Q).fake_quantize(x @ W.T)
    return _qp(Y_Q).fake_quantize(1 / (1 + np.exp(-h.astype(np.float64))))


def test_float_io_quantizes_at_the_boundary_only() -> None:
    g, rw = _lowered("float32")
    assert op_types(g) == ["QUANTIZE", "FULLY_CONNECTED", "LOGISTIC", "DEQUANTIZE"]
    assert rw.conversions == 2 and rw.computed_qparams == []
    types = tensor_types(g)
    assert (types["x"], types["y"], types["h"]) == ("float32", "float32", "int8")
    fc_version = g.model.operatorCodes[g.ops[1].opcodeIndex].version
    assert fc_version == kernels.kernel("FULLY_CONNECTED").int8
    (y,) = run(g, X)
    lsb = np.abs(y - _qdq_reference()) / Y_Q.scale
    assert lsb.max() <= INT8_MAX_LSB_P99, lsb


@pytest.mark.parametrize(("io_dtype", "shift"), [("int8", 0), ("uint8", 128)])
def test_integer_io_needs_no_conversion_inside(io_dtype: str, shift: int) -> None:
    g, rw = _lowered(io_dtype)
    want_ops = ["FULLY_CONNECTED", "LOGISTIC"]
    if io_dtype == "uint8":  # the kernels run int8: uint8 ⇄ int8 at both ends
        want_ops = ["QUANTIZE", *want_ops, "QUANTIZE"]
    assert op_types(g) == want_ops
    assert rw.conversions == len(want_ops) - 2
    types = tensor_types(g)
    assert types["x"] == types["y"] == io_dtype
    assert int(g.tensor(g.inputs[0]).quantization.zeroPoint[0]) == X_Q.zero_point + shift
    info = np.iinfo(io_dtype)
    xq = np.clip(np.rint(X / X_Q.scale) + X_Q.zero_point + shift, info.min, info.max)
    (y,) = run(g, xq.astype(io_dtype))
    got = (y.astype(np.float64) - Y_Q.zero_point - shift) * Y_Q.scale
    lsb = np.abs(got - _qdq_reference()) / Y_Q.scale
    assert lsb.max() <= INT8_MAX_LSB_P99, lsb


def test_a_float_op_gets_a_dequantize_before_it() -> None:
    g, rw = _lowered("float32", quantize_y=False)
    assert op_types(g) == ["QUANTIZE", "FULLY_CONNECTED", "DEQUANTIZE", "LOGISTIC"]
    assert rw.conversions == 2
    assert tensor_types(g)["y"] == "float32"
    (y,) = run(g, X)
    h = _qp(H_Q).fake_quantize(_qp(X_Q).fake_quantize(X) @ W.T)
    want = 1 / (1 + np.exp(-h.astype(np.float64)))
    assert sqnr_db(want, y) >= FP32_MIN_SQNR_DB  # LOGISTIC in float on the dequantized h
