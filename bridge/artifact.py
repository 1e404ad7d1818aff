"""The artifacts that flow through the stages: an ONNX model or a TFLite flatbuffer, each with
the I/O contract it must keep and the facts the stages learned about it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import onnx

from bridge.contract import IOContract


@dataclass(frozen=True)
class OnnxArtifact:
    """An ONNX model plus its I/O contract.

    Attributes:
        model: the ONNX model (inputs and outputs named as in `contract`).
        contract: the I/O contract as the PyTorch user sees it (always channel-first).
        stage: which stage produced it: "export", "passes" or "quantize".
        facts: what stages learned (pass log, quantization parameters, float fallbacks, ...).
            JSON-serialisable; each stage adds its own key and never mutates another's.
    """

    model: onnx.ModelProto
    contract: IOContract
    stage: str = "export"
    facts: dict[str, Any] = field(default_factory=dict)

    def evolve(self, **changes: Any) -> OnnxArtifact:
        """A copy with `changes` applied; `facts` given here are merged into the old ones."""
        if "facts" in changes:
            changes["facts"] = {**self.facts, **changes["facts"]}
        return replace(self, **changes)

    def serialized(self) -> bytes:
        return self.model.SerializeToString()


@dataclass(frozen=True)
class TfliteArtifact:
    """A TFLite flatbuffer plus the contract its inputs and outputs follow.

    Attributes:
        data: the flatbuffer bytes.
        contract: the I/O contract of the .tflite (channel-last images if `contract.nhwc`).
        mode: "fp32", "fp16", "dynamic", "int8" or "int16x8".
        source: the ONNX artifact it was lowered from.
        facts: what lowering learned (tensor correspondence, float fallbacks, ...).
        path: where it was written, once written.
    """

    data: bytes
    contract: IOContract
    mode: str
    source: OnnxArtifact
    facts: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def evolve(self, **changes: Any) -> TfliteArtifact:
        if "facts" in changes:
            changes["facts"] = {**self.facts, **changes["facts"]}
        return replace(self, **changes)

    @property
    def size_bytes(self) -> int:
        return len(self.data)
