"""`bridge convert model.qdq.onnx -o OUT`: the QDQ file's own scales, or a one-line refusal."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

import bridge
from bridge.cli import EXIT_ERROR, EXIT_OK, main


def test_cli_converts_a_qdq_file(cnn_qdq: Path, tmp_path: Path, capsys) -> None:
    assert main(["-q", "convert", str(cnn_qdq), "-o", str(tmp_path / "out")]) == EXIT_OK
    out = capsys.readouterr().out
    assert "qdq ⇄ tflite" in out and "PASS" in out and "[int8, NCHW]" in out
    assert (tmp_path / "out" / "model.tflite").stat().st_size > 0


def test_cli_refuses_a_broken_rule_in_one_line(sigmoid_qdq: Path, tmp_path: Path, capsys) -> None:
    assert main(["-q", "convert", str(sigmoid_qdq), "-o", str(tmp_path / "out")]) == EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert err.startswith("bridge: error: Sigmoid node '/Sigmoid'") and "\n" not in err
    assert "[rule fixed_output]" in err


def test_cli_refuses_requantizing_a_qdq_file(cnn_qdq: Path, tmp_path: Path, capsys) -> None:
    argv = ["-q", "convert", str(cnn_qdq), "-o", str(tmp_path / "o"), "--quantize", "int8"]
    assert main(argv) == EXIT_ERROR
    assert "keeps its own quantization" in capsys.readouterr().err


def test_api_is_public(cnn_qdq: Path) -> None:
    assert bridge.convert_qdq.__module__ == "bridge.importqdq.convert"


def test_float_onnx_is_not_a_qdq_model(cnn_float: Path, tmp_path: Path) -> None:
    with pytest.raises(bridge.ModelLoadError, match="no QuantizeLinear/DequantizeLinear"):
        bridge.convert_qdq(cnn_float, tmp_path / "out")


def test_computed_zero_point_is_named(cnn_qdq: Path, tmp_path: Path) -> None:
    """torch's QAT export computes per-channel zero points with a Cast: refused by node name."""
    model = onnx.load(cnn_qdq)
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
    model.graph.node.insert(0, onnx.helper.make_node("Identity", [q.input[2]], ["zp_copy"]))
    q.input[2] = "zp_copy"
    onnx.save(model, tmp_path / "computed.qdq.onnx")
    with pytest.raises(bridge.ModelLoadError, match=r"point 'zp_copy' from other nodes; fold"):
        bridge.convert_qdq(tmp_path / "computed.qdq.onnx", tmp_path / "out")
