"""Equalized tensors brought back to the float model's scale before they are compared.

Cross-layer equalization (`bridge.quantize.equalize`) makes the QDQ model, and the .tflite
lowered from it, hold x_c / t_c where the float ONNX model and torch hold x_c, channel by
channel along `CHANNEL_AXIS`. The factors t_c are recorded per tensor in the quantize stage's
facts["quantization"]["equalization"] (and so in report.json). Multiplying those runtimes'
values by t_c gives values comparable with the float model's.

The values are read in the ONNX layout: `bridge.runtime.capture` has already moved channel-last
.tflite tensors back to channel-first, so one axis serves the QDQ model and the .tflite alike.
A quantization step s of such a tensor is s·t_c per channel in the float model's scale
(`Unscaler.factor` gives t_c shaped for that).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bridge.quantize.equalize import CHANNEL_AXIS

log = logging.getLogger(__name__)

#: The runtimes that run the equalized model: QDQ ORT and LiteRT.
EQUALIZED = ("qdq", "tflite")


@dataclass(frozen=True)
class Unscaler:
    """Per-channel factors of the equalized tensors (tensor name → t_c along CHANNEL_AXIS)."""

    factors: Mapping[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_facts(cls, equalization: Mapping[str, Any] | None) -> Unscaler:
        """From facts["quantization"]["equalization"] (tensor → list of t_c); None: no-op."""
        return cls({t: np.asarray(f, np.float32) for t, f in (equalization or {}).items()})

    def factor(self, tensor: str, shape: tuple[int, ...]) -> np.ndarray | None:
        """t_c of `tensor` shaped to broadcast against a value of `shape`, or None when the
        tensor is not equalized or its channel count differs from its factors'."""
        t = self.factors.get(tensor)
        if t is None or len(shape) <= CHANNEL_AXIS or shape[CHANNEL_AXIS] != t.size:
            return None
        return t.reshape((-1,) + (1,) * (len(shape) - CHANNEL_AXIS - 1))

    def values(self, values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One runtime's `values` with every equalized tensor multiplied back by its t_c.

        An equalized tensor whose shape does not fit its factors is left out (and logged):
        compared as it is, it would show a divergence that is not there.
        """
        out = {}
        for name, v in values.items():
            if name not in self.factors:
                out[name] = v
                continue
            t = self.factor(name, v.shape)
            if t is None:
                log.warning(
                    "equalized tensor %s has shape %s, not %d channels on axis %d: not compared",
                    name,
                    v.shape,
                    self.factors[name].size,
                    CHANNEL_AXIS,
                )
                continue
            out[name] = (v * t).astype(np.float32)
        return out

    def runtimes(self, values: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, Any]:
        """{runtime: {tensor: value}} with the EQUALIZED runtimes' values unscaled."""
        if not self.factors:
            return dict(values)
        return {k: self.values(v) if k in EQUALIZED else v for k, v in values.items()}
