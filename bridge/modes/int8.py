"""int8: int8 activations and weights, calibrated; the only mode with integer model I/O."""

from __future__ import annotations

from bridge.modes.base import EXPORT, Link, Mode
from bridge.runtime.tolerances import FLOORS, RULES

MODE = Mode(
    name="int8",
    activation_dtype="int8",
    weight_dtype="int8",
    needs_calibration=True,
    has_qdq=True,
    floors=FLOORS["int8"],
    rules=RULES["int8"],
    links=(
        EXPORT,
        Link("ort", "qdq", "quantization", ("int8", "torch_vs_qdq"), accumulates=True),
        Link("qdq", "tflite", "conversion", ("int8", "qdq_vs_tflite"), accumulates=True),
        Link("ort", "tflite", "end-to-end", ("int8", "torch_vs_tflite"), accumulates=True),
    ),
    io_dtypes=("float32", "int8", "uint8"),
)
