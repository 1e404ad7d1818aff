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


class RuntimeCrashError(LoweringError):
    """LiteRT crashed natively (a signal or abort) on the .tflite; caught in a child process.

    Attributes name what crashed and where: `signal` (e.g. "SIGSEGV", or "exit status N"),
    `stage` ("load", "allocate", "invoke" or "release") and the first op whose inclusion crashes it
    (`op_index`, `op_type`, `tensor`: its output's name), each None when unknown.
    """

    def __init__(self, message: str, **site: Any) -> None:
        super().__init__(message)
        self.signal: str | None = site.get("signal")
        self.stage: str | None = site.get("stage")
        self.op_index: int | None = site.get("op_index")
        self.op_type: str | None = site.get("op_type")
        self.tensor: str | None = site.get("tensor")


class QdqRuleError(LoweringError):
    """An imported QDQ model's quantization breaks a TFLite integer kernel rule.

    Attributes: `node` (the ONNX node), `tensor` (the tensor whose parameters break it), `rule`
    (the rule's short name, e.g. "weight_symmetric") and `violations` (every message found).
    """

    def __init__(self, message: str, **site: Any) -> None:
        super().__init__(message)
        self.node: str | None = site.get("node")
        self.tensor: str | None = site.get("tensor")
        self.rule: str | None = site.get("rule")
        self.violations: list[str] = list(site.get("violations", []))


class PassError(BridgeError):
    """A graph pass broke the model (numerically or structurally)."""


class OutputDirError(BridgeError):
    """The output folder is unwritable or holds another model."""


class ParityError(BridgeError):
    """Runtimes disagree beyond tolerance. Carries the report."""

    def __init__(self, message: str, *, report: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.report = report or {}
