"""Per-layer error statistics, accumulated one sample at a time."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from bridge.runtime.metrics import SQNR_EXACT_DB
from bridge.verify.unscale import EQUALIZED, Unscaler


class _Acc:
    """SQNR, max abs and LSB error of one link on one tensor, summed over samples."""

    def __init__(self) -> None:
        self.signal = self.noise = self.max_abs = 0.0
        self.lsb_max: float | None = None
        self.lsb_sq = 0.0  # sum of squared errors in steps
        self.count = 0

    def add(self, ref: np.ndarray, out: np.ndarray, scale: float | np.ndarray | None) -> None:
        """Add one sample; `scale` is the candidate's quantization step, one value or one
        broadcastable against `ref` (per channel, for an equalized tensor)."""
        r = np.ravel(ref).astype(np.float32, copy=False)
        d = r - np.ravel(out).astype(np.float32, copy=False)
        if not np.all(np.isfinite(d)):
            self.noise = self.max_abs = float("inf")
            return
        self.signal += float(np.dot(r, r))
        self.noise += float(np.dot(d, d))
        worst = float(np.abs(d).max()) if d.size else 0.0
        self.max_abs = max(self.max_abs, worst)
        if scale is not None and np.all(np.asarray(scale) > 0):
            step = np.ravel(np.broadcast_to(np.asarray(scale, np.float32), np.shape(ref)))
            lsb = float((np.abs(d) / step).max()) if d.size else 0.0
            self.lsb_max = max(self.lsb_max or 0.0, lsb)
            self.lsb_sq += float(np.sum(np.square(d / step)))
            self.count += d.size

    def result(self) -> dict[str, Any]:
        if self.noise == 0.0:
            sqnr = SQNR_EXACT_DB
        elif self.signal == 0.0 or not np.isfinite(self.noise):
            sqnr = -SQNR_EXACT_DB
        else:
            sqnr = float(min(SQNR_EXACT_DB, 10.0 * np.log10(self.signal / self.noise)))
        rms = float(np.sqrt(self.lsb_sq / self.count)) if self.count else None
        return {
            "sqnr_db": round(sqnr, 2),
            "max_abs": self.max_abs,
            "lsb_max": self.lsb_max,
            "lsb_rms": rms,
        }


class LayerStats:
    """Error per (link, tensor) plus the shape and value range of every float ORT tensor."""

    def __init__(self) -> None:
        self.acc: dict[tuple[str, str], _Acc] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.ranges: dict[str, list[float]] = {}

    def add(
        self,
        values: Mapping[str, Mapping[str, np.ndarray]],
        scales: Mapping[str, float | None],
        links: Sequence[Any],
        quant: Mapping[str, Any],
        unscaler: Unscaler | None = None,
    ) -> None:
        """Add one sample: `values` is {runtime: {tensor: value}}; `scales` the .tflite steps.

        With `unscaler`, the equalized runtimes' values are in the float model's scale already,
        so a step s of an equalized tensor is s·t_c there.
        """
        for t, v in values["ort"].items():
            self.shapes[t] = v.shape
            lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
            old = self.ranges.get(t, [lo, hi])
            self.ranges[t] = [min(old[0], lo), max(old[1], hi)]
        for link in links:
            ref, cand = values[link.ref], values[link.cand]
            for t, r in ref.items():
                c = cand.get(t)
                if c is not None and r.shape == c.shape:
                    scale: float | np.ndarray | None = lsb_scale(link, t, scales, quant)
                    factor = unscaler.factor(t, c.shape) if unscaler is not None else None
                    if scale and factor is not None and link.cand in EQUALIZED:
                        scale = scale * factor
                    self.acc.setdefault((link.pair, t), _Acc()).add(r, c, scale)

    def rows(
        self, tensors: Sequence[tuple[str, onnx.NodeProto]], links: Sequence[Any]
    ) -> list[dict[str, Any]]:
        """One row per float tensor of the float ONNX model, in graph order (its metrics are
        empty where no two runtimes hold it, e.g. a Conv output fused with its ReLU)."""
        rows: list[dict[str, Any]] = []
        for t, node in tensors:
            metrics = {
                k.pair: self.acc[(k.pair, t)].result() for k in links if (k.pair, t) in self.acc
            }
            if t in self.shapes:
                rows.append(
                    {
                        "index": len(rows),
                        "tensor": t,
                        "node": node.name or t,
                        "op": node.op_type,
                        "shape": list(self.shapes.get(t, ())),
                        "range": self.ranges.get(t),
                        "metrics": metrics,
                    }
                )
        return rows


def lsb_scale(
    link: Any, tensor: str, tflite_scales: Mapping[str, float | None], quant: Mapping[str, Any]
) -> float | None:
    """One quantization step of `tensor` for the links that end on a quantized value."""
    if link.cand == "tflite" and tflite_scales.get(tensor):
        return tflite_scales[tensor]
    if link.cand in ("qdq", "tflite"):
        fact = quant.get(tensor) or {}
        if fact.get("kind") == "activation" and fact.get("scale"):
            return float(np.ravel(fact["scale"])[0])
    return None
