"""ONNX Runtime-quantized models, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.importqdq import ortnets


@pytest.fixture(scope="session")
def ort_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnxruntime.quantization")
    return tmp_path_factory.mktemp("ortqdq")


@pytest.fixture(scope="session")
def cnn_float(ort_dir: Path) -> Path:
    return ortnets.export(ortnets.SmallCnn(), ort_dir / "cnn.onnx")


@pytest.fixture(scope="session")
def cnn_qdq(ort_dir: Path, cnn_float: Path) -> Path:
    """SmallCnn by quantize_static: QDQ, per-channel int8 weights, int8 activations."""
    return ortnets.ort_quantize(cnn_float, ort_dir / "cnn.qdq.onnx")


@pytest.fixture(scope="session")
def cnn_u8_qdq(ort_dir: Path, cnn_float: Path) -> Path:
    """The same with uint8 activations (ONNX Runtime's default)."""
    return ortnets.ort_quantize(cnn_float, ort_dir / "cnn_u8.qdq.onnx", activations="uint8")


@pytest.fixture(scope="session")
def sigmoid_qdq(ort_dir: Path) -> Path:
    """Conv → Sigmoid: ONNX Runtime calibrates the sigmoid output like any other."""
    f = ortnets.export(ortnets.SigmoidHead(), ort_dir / "sig.onnx")
    return ortnets.ort_quantize(f, ort_dir / "sig.qdq.onnx")
