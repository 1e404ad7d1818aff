"""The same model, data and seed give byte-identical files, in any folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import bridge
import models
from tests.reliability.conftest import snapshot, tiny_cnn

MODEL_FILES = ("model.onnx", "model.opt.onnx", "model.tflite", "verify.npz")


def test_zoo_model_converts_to_identical_bytes(tmp_path: Path) -> None:
    files = []
    for folder in ("first", "second/nested"):
        model, inputs = models.get("digits_cnn")
        bridge.convert(model, inputs, tmp_path / folder, **models.convert_options("digits_cnn"))
        files.append(snapshot(tmp_path / folder))
    for name in MODEL_FILES:
        assert files[0][name] == files[1][name], f"{name} differs between two conversions"


def test_int8_is_deterministic_given_data_and_seed(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    calibration = [(rng.standard_normal((1, 3, 8, 8)).astype(np.float32),) for _ in range(32)]
    tflites = []
    for folder in ("one", "two"):
        model, inputs = tiny_cnn()
        conv = bridge.convert(
            model, inputs, tmp_path / folder, quantize="int8", calibration=calibration, seed=3
        )
        tflites.append(conv.tflite_path.read_bytes())
    assert tflites[0] == tflites[1]
