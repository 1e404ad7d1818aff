"""verify.plots: base64 PNGs of the per-layer SQNR and the modes comparison, drawn without
pyplot; the first divergence is a red line, exact matches are clipped to the axis."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np

from bridge.runtime import tolerances
from bridge.runtime.metrics import SQNR_EXACT_DB
from bridge.verify.plots import layer_plot, modes_plot

PNG = b"\x89PNG\r\n\x1a\n"
RED = np.array([0xD6, 0x27, 0x28]) / 255
FLOOR = tolerances.floor("fp16", "ort_vs_tflite")


def _image(b64: str) -> np.ndarray:
    from matplotlib.image import imread

    data = base64.b64decode(b64)
    assert data.startswith(PNG)
    return imread(io.BytesIO(data), format="png")


def _red_pixels(img: np.ndarray) -> int:
    return int(np.sum(np.all(np.abs(img[..., :3] - RED) < 0.02, axis=-1)))


def _layers(n: int, first: int | None) -> dict[str, Any]:
    link = {"pair": "ort_vs_tflite", "ref": "ort", "cand": "tflite", "kind": "conversion",
            "floor": FLOOR}  # fmt: skip
    rows = [
        {"index": i, "op": "Conv", "metrics": {"ort_vs_tflite": {"sqnr_db": SQNR_EXACT_DB - i}}}
        for i in range(n)
    ]
    found = {"index": first} if first is not None else None
    return {"links": [link], "rows": rows, "first_divergence": found}


def test_layer_plot_draws_the_first_divergence_in_red() -> None:
    plain = _image(layer_plot(_layers(5, None)))
    marked = _image(layer_plot(_layers(5, 2)))
    assert plain.shape[0] > 100 and plain.shape[1] > 500
    assert _red_pixels(plain) == 0
    assert _red_pixels(marked) > 100


def test_layer_plot_handles_no_rows_and_many_rows() -> None:
    assert _image(layer_plot(_layers(0, None))).size
    assert _image(layer_plot(_layers(200, 150))).size  # no per-row tick labels past 40


def test_modes_plot_draws_a_bar_per_mode_and_tolerates_missing_values() -> None:
    rows = [
        {"mode": "fp32", "size_mb": 1.2, "latency_ms": 0.3, "sqnr_db": 140.0},
        {"mode": "int8", "size_mb": 0.3, "latency_ms": None, "sqnr_db": None},
    ]
    img = _image(modes_plot(rows))
    assert img.shape[1] > img.shape[0] > 100
