"""Each TFLite kernel rule an imported QDQ model can break is refused by name, before lowering."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest

from bridge.errors import LoweringError, QdqRuleError
from bridge.importqdq import convert_qdq
from bridge.runtime import tolerances
from tests.unit.importqdq import ortnets


def _first_weight(model: onnx.ModelProto) -> onnx.NodeProto:
    return ortnets.weight_dqs(model)[0]


def asymmetric_weight(model: onnx.ModelProto) -> str:
    dq = _first_weight(model)
    zero = ortnets.initializer(model, dq.input[2])
    ortnets.set_initializer(model, dq.input[2], np.full_like(zero, 3))
    return dq.output[0]


def weight_level_128(model: onnx.ModelProto) -> str:
    dq = _first_weight(model)
    q = ortnets.initializer(model, dq.input[0]).copy()
    q.flat[0] = -128
    ortnets.set_initializer(model, dq.input[0], q)
    return dq.output[0]


def wrong_axis(model: onnx.ModelProto) -> str:
    """pw's [8, 8, 1, 1] weight re-quantized per input channel (axis 1)."""
    dq = ortnets.dq_of(model, "pw.weight_DequantizeLinear_Output")
    s, q = ortnets.initializer(model, dq.input[1]), ortnets.initializer(model, dq.input[0])
    w = q.astype(np.float64) * s.reshape(-1, 1, 1, 1)
    s1 = np.abs(w).max(axis=(0, 2, 3)) / 127
    ortnets.set_initializer(model, dq.input[1], s1.astype(np.float32))
    ortnets.set_initializer(
        model, dq.input[0], np.round(w / s1.reshape(1, -1, 1, 1)).astype(np.int8)
    )
    next(a for a in dq.attribute if a.name == "axis").i = 1
    return dq.output[0]


def bias_scale(model: onnx.ModelProto, factor: float = 1.37) -> str:
    """pw's bias at `factor` × s_in·s_w: off TFLite's int32 grid unless `factor` is whole."""
    dq = ortnets.dq_of(model, "pw.bias")
    s = ortnets.initializer(model, dq.input[1])
    ortnets.set_initializer(model, dq.input[1], (s * factor).astype(np.float32))
    return "pw.bias"


def maxpool_rescaled(model: onnx.ModelProto) -> str:
    s = float(ortnets.initializer(model, "/Relu_output_0_scale"))
    z = int(ortnets.initializer(model, "/Relu_output_0_zero_point"))
    ortnets.requantize_activation(model, "/pool/MaxPool_output_0", s * 1.5, z)
    return "/pool/MaxPool_output_0"


CASES: dict[str, tuple[Callable[[onnx.ModelProto], str], str]] = {
    "weight_symmetric": (asymmetric_weight, "symmetric int8 weights"),
    "weight_range": (weight_level_128, "[−127, 127]"),
    "weight_axis": (wrong_axis, "output-channel axis 0"),
    "bias_scale": (bias_scale, "s_in·s_w"),
    "same_scale": (maxpool_rescaled, "keeps its input's scale"),
}


@pytest.mark.parametrize("rule", sorted(CASES))
def test_broken_rule_is_refused_by_name(rule: str, cnn_qdq: Path, tmp_path: Path) -> None:
    edit, says = CASES[rule]
    model = onnx.load(cnn_qdq)
    tensor = edit(model)
    onnx.save(model, tmp_path / "bad.qdq.onnx")
    with pytest.raises(QdqRuleError) as e:
        convert_qdq(tmp_path / "bad.qdq.onnx", tmp_path / "out")
    assert e.value.rule == rule, str(e.value)
    assert e.value.tensor == tensor
    assert f"[rule {rule}]" in str(e.value) and says in str(e.value)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


def test_calibrated_sigmoid_output_is_refused(sigmoid_qdq: Path, tmp_path: Path) -> None:
    with pytest.raises(
        QdqRuleError, match=r"fixes its output at scale 0.00390625, zero point -128"
    ) as e:
        convert_qdq(sigmoid_qdq, tmp_path / "out")
    assert e.value.rule == "fixed_output"
    assert e.value.node == "/Sigmoid"
    assert isinstance(e.value, LoweringError)


def test_ort_uint8_weights_are_refused(cnn_float: Path, tmp_path: Path) -> None:
    """ONNX Runtime's uint8 weights sit at zero point 128 (symmetric, shifted exactly to int8)
    but use level 0, int8 −128, which TFLite's weight range excludes."""
    path = ortnets.ort_quantize(
        cnn_float, tmp_path / "u8w.qdq.onnx", activations="uint8", weights="uint8"
    )
    with pytest.raises(
        QdqRuleError, match=r"uses level −128 \(uint8 level 0 at zero point 128\)"
    ) as e:
        convert_qdq(path, tmp_path / "out")
    assert e.value.rule == "weight_range"
    assert len(e.value.violations) == 4  # every weight of the four layers


def test_every_violation_is_listed(cnn_qdq: Path, tmp_path: Path) -> None:
    model = onnx.load(cnn_qdq)
    bias_scale(model)
    maxpool_rescaled(model)
    onnx.save(model, tmp_path / "bad.qdq.onnx")
    with pytest.raises(QdqRuleError, match=r"\(1 more violation\(s\) besides\)") as e:
        convert_qdq(tmp_path / "bad.qdq.onnx", tmp_path / "out")
    assert [v.split("[rule ")[1].split("]")[0] for v in e.value.violations] == [
        "bias_scale",
        "same_scale",
    ]


def test_bias_at_a_whole_multiple_of_s_in_s_w_converts(cnn_qdq: Path, tmp_path: Path) -> None:
    """A bias scale of 2·s_in·s_w puts every value on TFLite's grid: exact, so accepted."""
    model = onnx.load(cnn_qdq)
    bias_scale(model, 2.0)
    onnx.save(model, tmp_path / "b2.qdq.onnx")
    report = convert_qdq(tmp_path / "b2.qdq.onnx", tmp_path / "out").report
    assert report["passed"], report["failures"]
    assert report["parity"]["qdq_vs_tflite"]["out"]["lsb_p99"] <= tolerances.INT8_MAX_LSB_P99
    assert report["scales_kept"]["biases_on_finer_grid"] == 1
