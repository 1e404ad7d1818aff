"""integer.constants: an integer op's float constants become the QDQ model's int8 weight levels
(exactly), an int32 bias on s_in·s_w, and min/max parameters for unmatched constants; weights
TFLite cannot run as given are a LoweringError."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper, numpy_helper

from bridge.errors import LoweringError
from bridge.lower.integer.assign import SCALE_RTOL, ActQ, Plan
from bridge.lower.integer.constants import TYPE_CODES, ConstantWriter, computed_qparams
from bridge.lower.integer.qdq import QdqModel
from bridge.qparams import QParams
from tests.unit.lower.graph_builders import F32, new_graph

RNG = np.random.default_rng(0)
LEVELS = RNG.integers(-127, 128, (3, 4)).astype(np.int8)
W_SCALES = np.array([1 / 64, 1 / 128, 1 / 32], np.float32)
W = (LEVELS * W_SCALES[:, None]).astype(np.float32)  # a dequantized QDQ weight [O, I]
B = np.array([0.3, -0.2, 0.05], np.float32)
X_Q = ActQ(1 / 16, -3)


def _qdq(zero_points: np.ndarray | None = None) -> QdqModel:
    graph = helper.make_graph([], "g", [], [], initializer=[numpy_helper.from_array(W, "W")])
    zp = np.zeros(3, np.int64) if zero_points is None else zero_points
    qp = QParams(W_SCALES, zp, "int8", axis=0, narrow=True)
    return QdqModel(helper.make_model(graph), activations={}, constants={"W": qp})


def _fc(weight: np.ndarray):
    g = new_graph()
    x = g.add_tensor("x", [1, 4], F32)
    w = g.add_tensor("w", weight.shape, F32, data=weight)
    b = g.add_tensor("b", [3], F32, data=B)
    y = g.add_tensor("y", [1, 3], F32)
    fc = g.new_op("FULLY_CONNECTED", [x, w, b], [y], 4)
    g.ops = [fc]
    plan = Plan(qparams={x: X_Q, y: ActQ(1 / 8, 0)})
    return g, fc, plan


def test_weight_and_bias_take_the_qdq_levels() -> None:
    g, fc, plan = _fc(W)
    writer = ConstantWriter(g, _qdq(), act_dtype="int8")
    writer.quantize_inputs(fc, plan)
    w, b = g.tensor(int(fc.inputs[1])), g.tensor(int(fc.inputs[2]))
    assert w.type == TYPE_CODES["int8"] and b.type == TYPE_CODES["int32"]
    np.testing.assert_array_equal(g.constant(int(fc.inputs[1])), LEVELS)
    np.testing.assert_array_equal(w.quantization.scale, W_SCALES)
    assert w.quantization.quantizedDimension == 0 and not np.any(w.quantization.zeroPoint)
    bias_scale = (X_Q.scale * W_SCALES.astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(b.quantization.scale, bias_scale)
    np.testing.assert_array_equal(g.constant(int(fc.inputs[2])), np.rint(B / bias_scale))
    assert writer.computed == [] and writer.rescaled == []


def test_shared_weight_is_written_once() -> None:
    g, fc, plan = _fc(W)
    second = g.new_op("FULLY_CONNECTED", [int(i) for i in fc.inputs], [int(fc.outputs[0])], 4)
    writer = ConstantWriter(g, _qdq(), act_dtype="int8")
    writer.quantize_inputs(fc, plan)
    writer.quantize_inputs(second, plan)
    assert list(second.inputs) == list(fc.inputs)


def test_weight_scaled_by_a_folded_factor_keeps_the_levels() -> None:
    """onnx2tf folds a constant multiplier (HardSigmoid's 1/6) into the weight."""
    g, fc, plan = _fc((W / 6).astype(np.float32))
    writer = ConstantWriter(g, _qdq(), act_dtype="int8")
    writer.quantize_inputs(fc, plan)
    w = g.tensor(int(fc.inputs[1]))
    np.testing.assert_array_equal(g.constant(int(fc.inputs[1])), LEVELS)
    np.testing.assert_allclose(w.quantization.scale, W_SCALES / 6, rtol=SCALE_RTOL)
    assert [r["qdq_weight"] for r in writer.rescaled] == ["W"]
    assert writer.rescaled[0]["factor"] == pytest.approx(1 / 6)


def test_asymmetric_qdq_weight_is_a_lowering_error() -> None:
    g, fc, plan = _fc(W)
    writer = ConstantWriter(g, _qdq(np.array([0, 1, 0], np.int64)), act_dtype="int8")
    with pytest.raises(LoweringError, match="TFLite needs symmetric int8 weights"):
        writer.quantize_inputs(fc, plan)


def test_unmatched_weight_gets_symmetric_max_scales() -> None:
    other = RNG.standard_normal((3, 4)).astype(np.float32)
    g, fc, plan = _fc(other)
    writer = ConstantWriter(g, _qdq(), act_dtype="int8")
    writer.quantize_inputs(fc, plan)
    w = g.tensor(int(fc.inputs[1]))
    want = np.abs(other).max(axis=1) / 127
    np.testing.assert_allclose(w.quantization.scale, want, rtol=SCALE_RTOL)
    assert np.abs(g.constant(int(fc.inputs[1]))).max(axis=1).tolist() == [127, 127, 127]
    assert writer.computed[0]["tensor"] == "w"


def test_computed_qparams_cover_the_values_and_zero() -> None:
    q8 = computed_qparams(np.array([0.5, 2.0]), "int8")  # [0, 2] over 255 steps
    assert q8.scale == pytest.approx(2 / 255) and q8.zero_point == -128
    q8 = computed_qparams(np.array([-1.0, 1.0]), "int8")
    assert q8.zero_point in (-1, 0) and q8.scale == pytest.approx(2 / 255)
    q16 = computed_qparams(np.array([-3.0, 1.0]), "int16")
    assert q16 == ActQ(3 / 32767, 0)
    assert computed_qparams(np.zeros(3), "int8") == ActQ(1.0, -128)
