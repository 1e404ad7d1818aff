"""convert_qdq: ONNX Runtime's QDQ models → integer .tflite with the file's own scales."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from bridge.errors import ParityError
from bridge.importqdq import convert_qdq, gate
from bridge.runtime import tolerances
from tests.unit.importqdq import ortnets


def _tflite_tensors(path: Path) -> list[dict]:
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(path)).get_tensor_details()


def _qdq_params(model: onnx.ModelProto) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every Q/DQ node's (scale, zero point) as stored in the file, by its first input."""
    return {
        n.input[0]: (ortnets.initializer(model, n.input[1]), ortnets.initializer(model, n.input[2]))
        for n in model.graph.node
        if n.op_type in ("QuantizeLinear", "DequantizeLinear")
    }


def _check_parity(report: dict) -> None:
    entry = report["parity"]["qdq_vs_tflite"]["out"]
    assert report["passed"], report["failures"]
    assert entry["lsb_p99"] <= tolerances.INT8_MAX_LSB_P99, entry
    assert entry["samples"] == 4


def test_ort_cnn_keeps_every_scale(cnn_qdq: Path, tmp_path: Path) -> None:
    result = convert_qdq(cnn_qdq, tmp_path / "out")
    report = result.report
    _check_parity(report)
    assert report["lowering"]["float_ops"] == []
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "model.qdq.onnx",
        "model.tflite",
        "report.html",
        "report.json",
        "report.md",
        "verify.npz",
    ]
    assert (tmp_path / "out" / "model.qdq.onnx").read_bytes() == cnn_qdq.read_bytes()
    model = onnx.load(cnn_qdq)
    stored = _qdq_params(model)
    details = {d["name"]: d for d in _tflite_tensors(result.tflite_path)}
    # activations: each mapped TFLite tensor carries its QDQ tensor's exact (scale, zero point)
    act_map = report["lowering"]["tensor_map"]
    assert len(act_map) >= 6
    for tfl_name, onnx_name in act_map.items():
        q = details[tfl_name]["quantization_parameters"]
        scale, zero = stored[onnx_name]
        assert q["scales"].tolist() == [float(scale)], (tfl_name, onnx_name)
        assert q["zero_points"].tolist() == [int(zero)], (tfl_name, onnx_name)
    # weights: int8 per-channel with a QDQ weight's scales; biases int32 with a QDQ bias's
    w_scales = {
        tuple(s.tolist()) for k, (s, z) in stored.items() if s.size > 1 and z.dtype == np.int8
    }
    b_scales = {tuple(s.tolist()) for k, (s, z) in stored.items() if z.dtype == np.int32}
    weights = [
        d
        for d in details.values()
        if d["dtype"] == np.int8 and d["quantization_parameters"]["scales"].size > 1
    ]
    biases = [
        d
        for d in details.values()
        if d["dtype"] == np.int32 and d["quantization_parameters"]["scales"].size
    ]
    assert len(weights) == len(w_scales) == 4
    assert len(biases) == len(b_scales) == 4
    assert {tuple(d["quantization_parameters"]["scales"].tolist()) for d in weights} == w_scales
    assert {tuple(d["quantization_parameters"]["scales"].tolist()) for d in biases} == b_scales
    assert report["scales_kept"] == {
        "activations": len(act_map),
        "weights": 4,
        "biases": 4,
        "biases_on_finer_grid": 0,
        "float_biases_rounded": 0,
        "differ": [],
    }


def test_uint8_activations_convert_exactly(cnn_u8_qdq: Path, tmp_path: Path) -> None:
    """uint8 (q, z) is int8 (q − 128, z − 128): the same real values, so no step may move."""
    result = convert_qdq(cnn_u8_qdq, tmp_path / "out")
    _check_parity(result.report)
    assert result.report["parity"]["qdq_vs_tflite"]["out"]["lsb_max"] == 0.0
    stored = _qdq_params(onnx.load(cnn_u8_qdq))
    details = {d["name"]: d for d in _tflite_tensors(result.tflite_path)}
    for tfl_name, onnx_name in result.report["lowering"]["tensor_map"].items():
        scale, zero = stored[onnx_name]
        assert zero.dtype == np.uint8
        q = details[tfl_name]["quantization_parameters"]
        assert details[tfl_name]["dtype"] == np.int8
        assert q["scales"].tolist() == [float(scale)]
        assert q["zero_points"].tolist() == [int(zero) - 128]


def test_sigmoid_at_fixed_output_converts(sigmoid_qdq: Path, tmp_path: Path) -> None:
    model = onnx.load(sigmoid_qdq)
    ortnets.requantize_activation(model, "out_QuantizeLinear_Input", 1 / 256, -128)
    onnx.save(model, tmp_path / "fixed.qdq.onnx")
    result = convert_qdq(tmp_path / "fixed.qdq.onnx", tmp_path / "out")
    _check_parity(result.report)
    assert "LOGISTIC" in result.report["lowering"]["float_lowering"]["op_counts"]
    assert result.report["lowering"]["float_ops"] == []


def test_parity_failure_writes_nothing(
    cnn_qdq: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A .tflite 10 output steps off its QDQ model is refused by the gate."""
    step = float(ortnets.initializer(onnx.load(cnn_qdq), "out_scale"))
    real = gate.LiteRTRunner

    class Off(real):
        def run(self, feeds):
            return {k: v + 10 * step for k, v in super().run(feeds).items()}

    monkeypatch.setattr(gate, "LiteRTRunner", Off)
    with pytest.raises(ParityError, match="qdq_vs_tflite") as e:
        convert_qdq(cnn_qdq, tmp_path / "out")
    assert e.value.report["parity"]["qdq_vs_tflite"]["out"]["lsb_max"] >= 9.9
    assert not (tmp_path / "out").exists()
