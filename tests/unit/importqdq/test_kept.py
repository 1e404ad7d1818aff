"""importqdq.kept: the proof that a .tflite keeps the imported QDQ scales: activations equal
their QDQ tensor's (scale, zero point), int8 weights and int32 biases equal some QDQ constant's
scales (a bias may sit on a whole-multiple finer grid s_in·s_w, a float bias on s_act·s_w);
anything else is listed, and require_kept refuses it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bridge.errors import LoweringError
from bridge.importqdq.kept import compare, require_kept, tflite_qparams
from bridge.runtime import tflite_io
from tests.unit.runtime.tiny_tflite import empty_model, op, tensor

#: x is a logistic output (TFLite's fixed 1/256): a weight's s_w is then 256 × the bias grid
#: s_x·s_w, and before, that whole multiple was taken for the bias's own QDQ scale.
S_X, S_Y, ZP_Y = 1 / 256, 0.0237, 3
S_W = np.array([0.01, 0.02], np.float32)


def _tflite(bias_scale: Any) -> bytes:
    """x_f ─QUANTIZE→ x ─FULLY_CONNECTED(w, b)→ y ─DEQUANTIZE→ y_f."""
    m = empty_model()
    x_f = tensor(m, "x_f", [1, 4], np.float32)
    x = tensor(m, "x", [1, 4], np.int8, qparams=(S_X, 0))
    w = tensor(m, "w", [2, 4], np.int8, data=np.ones((2, 4)), qparams=(S_W, [0, 0]))
    b = tensor(m, "b", [2], np.int32, data=np.zeros(2), qparams=(bias_scale, [0, 0]))
    y = tensor(m, "y", [1, 2], np.int8, qparams=(S_Y, ZP_Y))
    y_f = tensor(m, "y_f", [1, 2], np.float32)
    op(m, "QUANTIZE", [x_f], [x])
    op(m, "FULLY_CONNECTED", [x, w, b], [y])
    op(m, "DEQUANTIZE", [y], [y_f])
    m.subgraphs[0].inputs, m.subgraphs[0].outputs = [x_f], [y_f]
    return tflite_io.save(m)


def _tensors(bias: Any = None, y_zero: int = ZP_Y) -> dict[str, dict[str, Any]]:
    out = {
        "x_q": {"kind": "activation", "scale": [S_X], "zero_point": [0]},
        "y_q": {"kind": "activation", "scale": [S_Y], "zero_point": [y_zero]},
        "w_q": {"kind": "constant", "scale": S_W.tolist(), "zero_point": [0, 0]},
    }
    if bias is not None:
        out["b_q"] = {"kind": "constant", "scale": list(bias), "zero_point": [0, 0]}
    return out


MAP = {"x": "x_q", "y": "y_q", "y_f": "unmapped"}


def test_tflite_qparams_lists_quantized_tensors_and_which_are_constant() -> None:
    got = tflite_qparams(_tflite(S_X * S_W))
    assert set(got) == {"x", "w", "b", "y"}
    assert (got["w"]["dtype"], got["w"]["constant"]) == ("int8", True)
    assert (got["y"]["dtype"], got["y"]["constant"]) == ("int8", False)
    np.testing.assert_array_equal(got["y"]["zero_points"], [ZP_Y])
    np.testing.assert_array_equal(got["b"]["scales"], np.float32(S_X) * S_W)


def test_every_scale_kept() -> None:
    bias = np.float32(S_X) * S_W
    got = compare(tflite_qparams(_tflite(bias)), MAP, _tensors(bias))
    assert got == {"activations": 2, "weights": 1, "biases": 1, "biases_on_finer_grid": 0,
                   "float_biases_rounded": 0, "differ": []}  # fmt: skip
    require_kept(got)


def test_a_bias_on_a_whole_multiple_finer_grid_is_kept() -> None:
    fine = np.float32(S_X) * S_W
    got = compare(tflite_qparams(_tflite(fine)), MAP, _tensors(fine * 4))
    assert (got["biases"], got["biases_on_finer_grid"], got["differ"]) == (1, 1, [])


def test_a_float_bias_rounded_to_s_act_times_s_w_is_kept() -> None:
    got = compare(tflite_qparams(_tflite(np.float32(S_Y) * S_W)), MAP, _tensors())
    assert (got["biases"], got["float_biases_rounded"], got["differ"]) == (0, 1, [])


def test_changed_parameters_are_listed_and_refused() -> None:
    fine = np.float32(S_X) * S_W
    got = compare(tflite_qparams(_tflite(fine * 1.5)), MAP, _tensors(fine, y_zero=ZP_Y + 1))
    assert got["differ"] == [
        "y (from y_q)",
        "b (int32 biases with scales of no QDQ constant)",
    ]
    with pytest.raises(LoweringError, match=r"on 2 tensor\(s\), e\.g\. y \(from y_q\)"):
        require_kept(got)
