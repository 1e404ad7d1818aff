"""int16x8: int16 activations, int8 weights, calibrated (LiteRT's reference kernels)."""

from __future__ import annotations

from bridge.modes.base import EXPORT, Link, Mode
from bridge.runtime.tolerances import FLOORS, RULES

MODE = Mode(
    name="int16x8",
    activation_dtype="int16",
    weight_dtype="int8",
    needs_calibration=True,
    has_qdq=True,
    floors=FLOORS["int16x8"],
    rules=RULES["int16x8"],
    links=(
        EXPORT,
        Link("ort", "qdq", "quantization", ("int16x8", "torch_vs_qdq"), accumulates=True),
        Link("qdq", "tflite", "conversion", ("int16x8", "qdq_vs_tflite"), accumulates=True),
        Link("ort", "tflite", "end-to-end", ("int16x8", "torch_vs_tflite"), accumulates=True),
    ),
    io_dtypes=("float32", "int16"),
)
