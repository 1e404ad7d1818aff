"""fp16: float16 weights, float32 activations.

Links: the .tflite computes the float16-rounded weights in float32, so it must match them at
the fp32 floor.
"""

from __future__ import annotations

from bridge.modes.base import EXPORT, Link, Mode
from bridge.runtime.tolerances import FLOORS

MODE = Mode(
    name="fp16",
    activation_dtype="float32",
    weight_dtype="float16",
    needs_calibration=False,
    has_qdq=False,
    floors=FLOORS["fp16"],
    links=(
        EXPORT,
        Link("ort", "qdq", "quantization", ("fp16", "ort_vs_tflite"), accumulates=True),
        Link("qdq", "tflite", "conversion", ("fp32", "ort_vs_tflite")),
        Link("ort", "tflite", "end-to-end", ("fp16", "ort_vs_tflite"), accumulates=True),
    ),
)
