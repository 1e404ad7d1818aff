"""Quantization stage: float ONNX → QDQ ONNX under TFLite's integer rules.

`quantize(artifact, config, calibration)` = `calibrate` (observers over ONNX Runtime
activations) + `quantize_model` (QuantizeLinear/DequantizeLinear written per rules.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import onnx

from bridge.artifact import OnnxArtifact
from bridge.errors import CalibrationError, PassError
from bridge.quantize.calibrate import calibrate, load_calibration
from bridge.quantize.config import QuantConfig
from bridge.quantize.observers import OBSERVERS, Observer
from bridge.quantize.qdq import quantize_model, weight_moments
from bridge.quantize.refine import finish, prepare
from bridge.quantize.rules import RULES, OpRule, rule_for

__all__ = [
    "OBSERVERS",
    "RULES",
    "Observer",
    "OpRule",
    "QuantConfig",
    "calibrate",
    "load_calibration",
    "quantize",
    "quantize_model",
    "rule_for",
]


def quantize(
    artifact: OnnxArtifact,
    config: QuantConfig,
    calibration: Iterable[Any] | str | os.PathLike | None = None,
) -> OnnxArtifact:
    """Quantize `artifact` to a QDQ ONNX model checked by onnx.checker.

    Args:
        artifact: the optimised float model.
        config: what to quantize and how.
        calibration: samples (see `calibrate`) or a path `load_calibration` reads; required for
            "int8" and "int16x8", ignored for "dynamic".

    Raises:
        CalibrationError: calibration data is missing, empty or malformed.
    """
    moments = None
    if config.activation_dtype is None:
        observers: dict[str, Observer] = {}
    else:
        if calibration is None:
            raise CalibrationError(
                f"mode {config.mode!r} needs calibration data: pass calibration= as a list of "
                "input tuples, a .npy/.npz path or an image folder (or use mode 'dynamic')"
            )
        if isinstance(calibration, str | os.PathLike):
            calibration = load_calibration(calibration, artifact.contract)
        prepared = prepare(artifact, calibration, config)
        artifact, calibration = prepared.artifact, prepared.calibration
        if config.weight_rounding == "gptq":
            moments = weight_moments(artifact.model, config)
        observers = calibrate(artifact, calibration, config, moments=moments)
    result = quantize_model(artifact, observers, config, moments=moments)
    if config.activation_dtype is not None:
        result = finish(result, prepared, config)
    try:
        onnx.checker.check_model(result.model)
    except onnx.checker.ValidationError as e:
        raise PassError(f"the QDQ model fails onnx.checker: {e}") from e
    return result
