"""integer.assign: TFLite activations take their ONNX twin's parameters, unmatched ones take them
through scale-keeping and fixed-output ops, ops without parameters stay float with a reason,
and `check` refuses scales LiteRT's kernels cannot run."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from bridge.errors import LoweringError
from bridge.lower.integer import kernels
from bridge.lower.integer.assign import SCALE_RTOL, ActQ, assign, check
from bridge.lower.integer.qdq import QdqModel
from bridge.qparams import QParams
from tests.unit.lower.graph_builders import F32, I32, add_op, new_graph

W = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
X_Q, H_Q = ActQ(1 / 64, -3), ActQ(1 / 32, 10)  # exact in float32
SIGMOID = ActQ(*kernels.kernel("LOGISTIC").fixed_output["int8"])


def _graph():
    """x [1,4] ─FC(W)→ h ─RESHAPE→ r ─LOGISTIC→ y; r holds no ONNX tensor."""
    g = new_graph()
    x = g.add_tensor("x", [1, 4], F32)
    w = g.add_tensor("w", W.shape, F32, data=W)
    h = g.add_tensor("h", [1, 3], F32)
    s = g.add_tensor("s", [2], I32, data=np.array([1, 3], np.int32))
    r = g.add_tensor("r", [1, 3], F32)
    y = g.add_tensor("y", [1, 3], F32)
    ops = [
        g.new_op("FULLY_CONNECTED", [x, w, -1], [h], 4),
        add_op(g, "RESHAPE", [h, s], [r]),
        add_op(g, "LOGISTIC", [r], [y]),
    ]
    g.ops = ops
    g.sg.inputs, g.sg.outputs = [x], [y]
    return g, {"x": x, "h": h, "r": r, "y": y}


def _qdq(**acts: ActQ) -> QdqModel:
    params = {
        n: QParams(np.float32([q.scale]), np.int64([q.zero_point]), "int8") for n, q in acts.items()
    }
    return QdqModel(onnx.ModelProto(), activations=params, constants={})


def _assign(g, t, qdq: QdqModel, *, matched=("x", "h", "y")):
    matches = {t[n]: [n] for n in matched}
    return assign(g, matches, qdq, act_dtype="int8", onnx_order={"x": 0, "h": 1, "y": 2})


def test_twins_propagation_and_fixed_outputs() -> None:
    g, t = _graph()
    plan = _assign(g, t, _qdq(x=X_Q, h=H_Q, y=SIGMOID), matched=("x", "h"))
    assert plan.qparams[t["x"]] == X_Q and plan.qparams[t["h"]] == H_Q
    assert plan.qparams[t["r"]] == H_Q  # through the RESHAPE
    assert plan.qparams[t["y"]] == SIGMOID  # the LOGISTIC's fixed output
    assert plan.source == {t["x"]: "x", t["h"]: "h"}
    assert plan.integer_ops == {id(op) for op in g.ops} and plan.float_ops == []
    check(g, plan, act_dtype="int8")


def test_an_op_without_parameters_stays_float_with_its_reason() -> None:
    g, t = _graph()
    plan = _assign(g, t, _qdq(x=X_Q, h=H_Q))  # y is matched, but the QDQ model left it float
    assert t["y"] not in plan.qparams
    assert plan.integer_ops == {id(g.ops[0]), id(g.ops[1])}
    assert plan.float_ops == [
        {
            "op": "LOGISTIC",
            "tensor": "y",
            "reason": "no quantization parameters for this tensor in the QDQ model",
        }
    ]


def test_int16_parameters_in_an_int8_mode_are_refused() -> None:
    g, t = _graph()
    qdq = _qdq(x=X_Q)
    qdq.activations["x"] = QParams(np.float32([0.001]), np.int64([0]), "int16")
    with pytest.raises(LoweringError, match="'x' is quantized as int16"):
        _assign(g, t, qdq)


def test_check_names_a_wrong_fixed_output() -> None:
    g, t = _graph()
    plan = _assign(g, t, _qdq(x=X_Q, h=H_Q, y=ActQ(1 / 128, 0)))
    wrong = r"LOGISTIC output 'y' has scale 0\.0078125, zero point 0; .* requires 0\.00390625, -128"
    with pytest.raises(LoweringError, match=wrong) as e:
        check(g, plan, act_dtype="int8")
    assert "1 TFLite integer kernel rule" in str(e.value)


def test_check_names_a_broken_same_scale_op() -> None:
    g, t = _graph()
    plan = _assign(g, t, _qdq(x=X_Q, h=H_Q, y=SIGMOID))
    plan.qparams[t["r"]] = ActQ(H_Q.scale * 2, H_Q.zero_point)
    with pytest.raises(LoweringError, match="RESHAPE keeps scale, but 'h'"):
        check(g, plan, act_dtype="int8")


def test_actq_same_within_scale_rtol() -> None:
    assert ActQ(0.5, 1).same(ActQ(0.5 * (1 + SCALE_RTOL / 2), 1))
    assert not ActQ(0.5, 1).same(ActQ(0.5 * (1 + 4 * SCALE_RTOL), 1))
    assert not ActQ(0.5, 1).same(ActQ(0.5, 2))
