"""The per-layer comparison (`localize`'s result) as text and Markdown tables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.verify.report import markdown_table, table

#: Marks a row whose link misses its floor, and the first diverging row.
MISS, FIRST = "!", "◀ first divergence"


def pair_label(link: Mapping[str, Any], labels: Mapping[str, str]) -> str:
    """ "ort_vs_tflite" → "ORT ⇄ LiteRT"."""
    return f"{labels.get(link['ref'], link['ref'])} ⇄ {labels.get(link['cand'], link['cand'])}"


def header(layers: Mapping[str, Any]) -> list[str]:
    """#, layer, op, shape, then SQNR per link, max abs and LSB of the last judged link, flag."""
    labels = layers.get("labels", {})
    cols = ["#", "layer", "op", "shape"]
    cols += [f"{pair_label(k, labels)} dB" for k in layers["links"]]
    last = _last_judged(layers)
    if last is not None:
        cols += [f"max abs ({pair_label(last, labels)})"]
        if _has_lsb(layers, last["pair"]):
            cols += ["LSB max"]
    return [*cols, ""]


def rows(layers: Mapping[str, Any]) -> list[list[str]]:
    """One row per compared tensor, in graph order."""
    from bridge.verify.divergence import short_name

    first = (layers.get("first_divergence") or {}).get("tensor")
    last = _last_judged(layers)
    lsb = last is not None and _has_lsb(layers, last["pair"])
    out = []
    for r in layers["rows"]:
        cells = [str(r["index"]), short_name(r["node"]), r["op"], "x".join(map(str, r["shape"]))]
        missed = False
        for k in layers["links"]:
            m = r["metrics"].get(k["pair"])
            if m is None:
                cells.append("")
                continue
            low = k["floor"] is not None and k["kind"] and m["sqnr_db"] < k["floor"]
            missed |= bool(low)
            cells.append(f"{m['sqnr_db']:.1f}{MISS if low else ''}")
        if last is not None:
            m = r["metrics"].get(last["pair"])
            cells.append("" if m is None else f"{m['max_abs']:.3g}")
            if lsb:
                cells.append("" if m is None or m["lsb_max"] is None else f"{m['lsb_max']:.1f}")
        cells.append(FIRST if r["tensor"] == first else (MISS if missed else ""))
        out.append(cells)
    return out


def _last_judged(layers: Mapping[str, Any]) -> Mapping[str, Any] | None:
    judged = [k for k in layers["links"] if k["kind"] and k["kind"] != "export"]
    return judged[-1] if judged else None


def _has_lsb(layers: Mapping[str, Any], pair: str) -> bool:
    return any(r["metrics"].get(pair, {}).get("lsb_max") is not None for r in layers["rows"])


def verdict(layers: Mapping[str, Any]) -> str:
    """The first divergence explained, or that every layer meets its floor."""
    found = layers.get("first_divergence")
    if found:
        return found["explanation"]
    n = len(layers["rows"])
    k = sum(1 for r in layers["rows"] if r["metrics"])
    text = f"no diverging layer: all {k} compared tensors meet their floors."
    if k < n:
        text += f" {n - k} of the {n} tensors have no counterpart to compare with."
    return text


def floors_line(layers: Mapping[str, Any]) -> str:
    labels = layers.get("labels", {})
    parts = [
        f"{pair_label(k, labels)} ≥ {k['floor']:.0f} dB ({k['kind']})"
        for k in layers["links"]
        if k["kind"] and k["floor"] is not None
    ]
    return "floors: " + ", ".join(parts) + f"; {layers.get('samples', 0)} samples"


def render_text(layers: Mapping[str, Any]) -> str:
    """The per-layer table and the verdict, for a terminal."""
    return "\n".join([table(header(layers), rows(layers)), floors_line(layers), verdict(layers)])


def render_markdown(layers: Mapping[str, Any]) -> str:
    """The per-layer section of report.md."""
    lines = ["## Per-layer comparison", "", f"**{verdict(layers)}**", "", floors_line(layers), ""]
    lines += [markdown_table(header(layers), rows(layers)), ""]
    return "\n".join(lines)
