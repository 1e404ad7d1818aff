"""verify.structure: the audit of an integer .tflite finds float weights, wrong bias scales,
scales that differ from the QDQ model's, and QUANTIZE/DEQUANTIZE away from the boundary.

The model is hand-built: x_f ─QUANTIZE→ x ─FULLY_CONNECTED(w, b)→ y ─DEQUANTIZE→ y_f.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bridge.runtime import tflite_io
from bridge.verify.structure import FLOAT_CONST_MIN_ELEMENTS, SCALE_RTOL, audit_integer
from tests.unit.runtime.tiny_tflite import empty_model, op, tensor

S_X, S_Y, ZP_Y = 0.1, 0.2, 3
S_W = np.array([0.01, 0.02])
IN = 4


def _model(*, bias_scale: Any = None, float_weights: bool = False, y_out: bool = True) -> bytes:
    m = empty_model()
    x_f = tensor(m, "x_f", [1, IN], np.float32)
    x = tensor(m, "x", [1, IN], np.int8, qparams=(S_X, 0))
    w_type, w_q = (np.float32, None) if float_weights else (np.int8, (S_W, [0, 0]))
    w = tensor(m, "w", [2, IN], w_type, data=np.ones((2, IN)), qparams=w_q)
    b_scale = S_X * S_W if bias_scale is None else bias_scale
    b = tensor(m, "b", [2], np.int32, data=np.zeros(2), qparams=(b_scale, [0, 0]))
    y = tensor(m, "y", [1, 2], np.int8, qparams=(S_Y, ZP_Y))
    y_f = tensor(m, "y_f", [1, 2], np.float32)
    op(m, "QUANTIZE", [x_f], [x])
    op(m, "FULLY_CONNECTED", [x, w, b], [y])
    op(m, "DEQUANTIZE", [y], [y_f])
    m.subgraphs[0].inputs, m.subgraphs[0].outputs = [x_f], [y_f if y_out else y]
    return tflite_io.save(m)


def _report(y_scale: float = S_Y, y_zero: int = ZP_Y, w_scale: Any = S_W) -> dict[str, Any]:
    tensors = {
        "x_onnx": {"kind": "activation", "scale": [S_X], "zero_point": [0]},
        "y_onnx": {"kind": "activation", "scale": [y_scale], "zero_point": [y_zero]},
        "w_onnx": {"kind": "weight", "scale": list(w_scale), "zero_point": [0, 0]},
    }
    lowering = {"tensor_map": {"x": "x_onnx", "y": "y_onnx"}}
    return {"mode": "int8", "quantization": {"tensors": tensors}, "lowering": lowering}


def test_a_correct_integer_model_has_no_problems() -> None:
    got = audit_integer(_model(), _report())
    assert got == {"ops": {"FULLY_CONNECTED": 1}, "scales_checked": 3, "problems": []}


def test_bias_off_s_in_times_s_w_is_reported() -> None:
    got = audit_integer(_model(bias_scale=S_X * S_W * (1 + 100 * SCALE_RTOL)), _report())
    assert got["problems"] == ["FULLY_CONNECTED y: bias scale is not s_in·s_w"]


def test_a_bias_without_scales_is_reported() -> None:
    got = audit_integer(_model(bias_scale=[]), _report())
    assert got["problems"] == ["FULLY_CONNECTED y: bias scale is not s_in·s_w"]


def test_float_weights_are_reported() -> None:
    got = audit_integer(_model(float_weights=True), _report())
    assert got["problems"] == [
        "FULLY_CONNECTED y: weights are type 0, not int8",
        "FULLY_CONNECTED y: input or weights carry no scale, so the bias scale is unchecked",
    ]
    assert 2 * IN <= FLOAT_CONST_MIN_ELEMENTS  # too small to count as a float weight buffer
    assert not any(p.startswith("float32 constant") for p in got["problems"])


def test_activation_qparams_must_equal_the_qdq_models() -> None:
    scale = audit_integer(_model(), _report(y_scale=S_Y * (1 + 100 * SCALE_RTOL)))
    assert len(scale["problems"]) == 1 and scale["problems"][0].startswith("y: scale [")
    zero = audit_integer(_model(), _report(y_zero=ZP_Y + 1))
    assert zero["problems"] == ["y: zero point [3] differs from QDQ"]


def test_weight_scales_must_be_some_qdq_weights() -> None:
    got = audit_integer(_model(), _report(w_scale=S_W[::-1]))
    assert got["problems"] == ["w: per-channel weight scales match no QDQ weight"]


def test_dequantize_inside_the_graph_is_reported() -> None:
    got = audit_integer(_model(y_out=False), _report())
    assert got["problems"] == ["DEQUANTIZE y_f inside the graph, not before a float op"]
