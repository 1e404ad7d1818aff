"""Report plots as base64 PNG (matplotlib's Agg canvas, no pyplot state, no display needed)."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any

from bridge.verify.layer_report import pair_label

#: Plotted SQNR is clipped to this range so that exact matches (200 dB) do not flatten the rest.
SQNR_AXIS_DB = (-10.0, 150.0)
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b")
DPI = 100


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def layer_plot(layers: Mapping[str, Any]) -> str:
    """SQNR per layer and link (lines), each judged floor (dashed), the first divergence (red)."""
    rows = layers["rows"]
    labels = layers.get("labels", {})
    fig = _figure(10.0, 3.8)
    ax = fig.add_subplot(1, 1, 1)
    lo, hi = SQNR_AXIS_DB
    for color, link in zip(COLORS, layers["links"], strict=False):
        pts = [
            (r["index"], min(hi, max(lo, r["metrics"][link["pair"]]["sqnr_db"])))
            for r in rows
            if link["pair"] in r["metrics"]
        ]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        style = "-" if link["kind"] else ":"
        ax.plot(xs, ys, style, marker=".", color=color, label=pair_label(link, labels))
        if link["kind"] and link["floor"] is not None:
            ax.axhline(link["floor"], color=color, linestyle="--", linewidth=0.8)
    found = layers.get("first_divergence")
    if found:
        ax.axvline(found["index"], color="#d62728", linewidth=1.5)
        ax.annotate(
            "first divergence",
            (found["index"], hi - 8),
            color="#d62728",
            xytext=(4, 0),
            textcoords="offset points",
        )
    ax.set_ylim(lo, hi + 2)
    ax.set_xlim(-0.5, max(len(rows) - 0.5, 0.5))
    ax.set_xlabel("layer (float ONNX graph order)")
    ax.set_ylabel("SQNR (dB)")
    if len(rows) <= 40:
        ax.set_xticks([r["index"] for r in rows])
        ax.set_xticklabels([r["op"] for r in rows], rotation=60, fontsize=7, ha="right")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    return _png(fig)


def modes_plot(rows: Sequence[Mapping[str, Any]]) -> str:
    """Bars per mode: size (MB), median latency (ms) and SQNR vs torch (dB)."""
    fig = _figure(10.0, 2.8)
    panels = (
        ("size_mb", "size (MB)"),
        ("latency_ms", "latency (ms, 1 thread)"),
        ("sqnr_db", "SQNR vs torch (dB)"),
    )
    names = [r["mode"] for r in rows]
    for i, (key, title) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        values = [float(r[key]) if r.get(key) is not None else 0.0 for r in rows]
        bars = ax.bar(names, values, color=[COLORS[j % len(COLORS)] for j in range(len(rows))])
        ax.bar_label(bars, fmt="%.3g", fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=8)
        ax.margins(y=0.2)
    fig.tight_layout()
    return _png(fig)
