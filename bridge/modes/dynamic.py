"""dynamic: int8 weights, float activations, no calibration.

Links: LiteRT's hybrid kernels also quantize activations on the fly, so the .tflite ⇄
weight-only QDQ link keeps the dynamic floor.
"""

from __future__ import annotations

from bridge.modes.base import EXPORT, Link, Mode
from bridge.runtime.tolerances import FLOORS

MODE = Mode(
    name="dynamic",
    activation_dtype="float32",
    weight_dtype="int8",
    needs_calibration=False,
    has_qdq=True,
    floors=FLOORS["dynamic"],
    links=(
        EXPORT,
        Link("ort", "qdq", "quantization", ("dynamic", "ort_vs_tflite"), accumulates=True),
        Link("qdq", "tflite", "conversion", ("dynamic", "ort_vs_tflite"), accumulates=True),
        Link("ort", "tflite", "end-to-end", ("dynamic", "ort_vs_tflite"), accumulates=True),
    ),
)
