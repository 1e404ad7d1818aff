"""integer.linear.linearize: BATCH_MATMUL with a constant matrix becomes FULLY_CONNECTED
(keep_num_dims) with the bias ADD folded in, unless the QDQ model rounds the product."""

from __future__ import annotations

import numpy as np
import onnx

from bridge.lower.integer.linear import FC_KEEP_DIMS_VERSION, linearize
from bridge.lower.integer.qdq import QdqModel
from bridge.qparams import QParams
from bridge.runtime.metrics import sqnr_db
from bridge.runtime.tolerances import FP32_MIN_SQNR_DB
from tests.unit.lower.graph_builders import F32, add_op, new_graph, op_types, run

RNG = np.random.default_rng(0)
W = RNG.standard_normal((4, 3)).astype(np.float32)  # ONNX MatMul's [K, N]
B = RNG.standard_normal(3).astype(np.float32)
X = RNG.standard_normal((1, 5, 4)).astype(np.float32)
NO_QDQ = QdqModel(onnx.ModelProto(), activations={}, constants={})


def _matmul_add(*, relu: bool = False):
    """x [1,5,4] ─BATCH_MATMUL(W)→ p [1,5,3] ─ADD(b)→ y."""
    g = new_graph()
    x = g.add_tensor("x", [1, 5, 4], F32)
    w = g.add_tensor("w", W.shape, F32, data=W)
    p = g.add_tensor("p", [1, 5, 3], F32)
    b = g.add_tensor("b", [1, 1, 3], F32, data=B.reshape(1, 1, 3))
    y = g.add_tensor("y", [1, 5, 3], F32)
    add_op(g, "BATCH_MATMUL", [x, w], [p])
    add_op(g, "ADD", [p, b], [y], fusedActivationFunction=1 if relu else 0)
    g.sg.inputs, g.sg.outputs = [x], [y]
    return g, p


def test_matmul_and_bias_become_one_fully_connected() -> None:
    g, _ = _matmul_add(relu=True)
    assert linearize(g, {}, NO_QDQ) == 1
    assert op_types(g) == ["FULLY_CONNECTED"]
    fc = g.ops[0]
    assert g.model.operatorCodes[fc.opcodeIndex].version == FC_KEEP_DIMS_VERSION
    assert fc.builtinOptions.keepNumDims and fc.builtinOptions.fusedActivationFunction == 1
    np.testing.assert_array_equal(g.constant(int(fc.inputs[1])), W.T)  # [N, K]
    np.testing.assert_array_equal(g.constant(int(fc.inputs[2])), B)
    (y,) = run(g, X)
    assert y.shape == (1, 5, 3)
    assert sqnr_db(np.maximum(X @ W + B, 0), y) >= FP32_MIN_SQNR_DB


def test_a_quantized_product_keeps_its_add() -> None:
    g, p = _matmul_add()
    qdq = QdqModel(onnx.ModelProto(), activations={"mm_out": QParams(0.1, 0, "int8")}, constants={})
    assert linearize(g, {p: ["mm_out"]}, qdq) == 1
    assert op_types(g) == ["FULLY_CONNECTED", "ADD"]
    assert int(g.ops[0].inputs[2]) == -1  # no bias
    (y,) = run(g, X)
    assert sqnr_db(X @ W + B, y) >= FP32_MIN_SQNR_DB


def test_activation_times_activation_is_left_alone() -> None:
    g = new_graph()
    a = g.add_tensor("a", [1, 5, 4], F32)
    c = g.add_tensor("c", [1, 4, 3], F32)
    y = g.add_tensor("y", [1, 5, 3], F32)
    add_op(g, "BATCH_MATMUL", [a, c], [y])
    g.sg.inputs, g.sg.outputs = [a, c], [y]
    assert linearize(g, {}, NO_QDQ) == 0
    assert op_types(g) == ["BATCH_MATMUL"]
