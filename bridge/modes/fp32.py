"""fp32: a float32 .tflite, no quantization."""

from __future__ import annotations

from bridge.modes.base import EXPORT, Link, Mode
from bridge.runtime.tolerances import FLOORS

MODE = Mode(
    name="fp32",
    activation_dtype="float32",
    weight_dtype="float32",
    needs_calibration=False,
    has_qdq=False,
    floors=FLOORS["fp32"],
    links=(EXPORT, Link("ort", "tflite", "conversion", ("fp32", "ort_vs_tflite"))),
)
