"""Typed errors. Every failure caused by user input derives from `BridgeError`."""

from __future__ import annotations

from typing import Any


class BridgeError(Exception):
    """Base class: a failure the user can act on. The message says what, where and what next."""


class ConfigError(BridgeError):
    """An option or combination of options is invalid."""


class ExportError(BridgeError):
    """torch → ONNX export failed."""


class ModelLoadError(BridgeError):
    """A model file is missing, truncated or corrupt."""


class ShapeError(BridgeError):
    """Inputs do not match the model's expected shapes or dtypes."""


class UnsupportedOpError(BridgeError):
    """An operator has no lowering."""

    def __init__(self, message: str, *, node: str | None = None, op: str | None = None) -> None:
        super().__init__(message)
        self.node = node
        self.op = op


class CalibrationError(BridgeError):
    """Calibration data is empty, malformed or non-finite."""


class LoweringError(BridgeError):
    """ONNX → TFLite lowering failed."""


class PassError(BridgeError):
    """A graph pass broke the model (numerically or structurally)."""


class OutputDirError(BridgeError):
    """The output folder is unwritable or holds another model."""


class ParityError(BridgeError):
    """Runtimes disagree beyond tolerance. Carries the report."""

    def __init__(self, message: str, *, report: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.report = report or {}
