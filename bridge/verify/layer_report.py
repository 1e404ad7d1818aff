"""The per-layer comparison (`localize`'s result) as text and Markdown tables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.verify.divergence import LAYER_DROP_DB, short_name
from bridge.verify.tables import markdown_table, table

#: Marks a row whose link misses its floor, and the first diverging row.
MISS, FIRST = "!", "◀ first divergence"
#: Name at most this many of the .tflite's variable tensors.
MAX_NAMES = 4


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
    judged = [k for k in layers["links"] if k["kind"] in ("quantization", "conversion")]
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
    low = sum(1 for r in layers["rows"] if _misses(r, layers["links"]))
    if low:
        text = (
            f"no diverging layer: every output meets its floors; {low} of the {k} compared "
            f"tensors fall below a quantized link's floor ({MISS}), each within "
            f"{LAYER_DROP_DB:.0f} dB of its inputs: noise accumulated over the layers, which "
            "later layers average out."
        )
    else:
        text = f"no diverging layer: all {k} compared tensors meet their floors."
    if k < n:
        text += f" {n - k} of the {n} tensors have no counterpart to compare with."
    return text


def _misses(row: Mapping[str, Any], links: list[Mapping[str, Any]]) -> bool:
    """Some judged link of `row` is below its floor."""
    return any(
        k["kind"]
        and k["floor"] is not None
        and k["pair"] in row["metrics"]
        and row["metrics"][k["pair"]]["sqnr_db"] < k["floor"]
        for k in links
    )


def state_note(layers: Mapping[str, Any]) -> str | None:
    """A warning when the .tflite keeps state between runs in variable tensors."""
    state = layers.get("tflite_state")
    if not state:
        return None
    names = ", ".join(state[:MAX_NAMES]) + (", ..." if len(state) > MAX_NAMES else "")
    return (
        f"note: the .tflite keeps state from one run to the next in {len(state)} variable "
        f"tensors ({names}); LiteRT starts each run from the last one's state where the ONNX "
        "model starts from zeros, so reset them between independent inputs "
        "(Interpreter.reset_all_variables()). Each sample here was run from reset state."
    )


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
    lines = [table(header(layers), rows(layers)), floors_line(layers), verdict(layers)]
    note = state_note(layers)
    return "\n".join([*lines, note] if note else lines)


def render_markdown(layers: Mapping[str, Any]) -> str:
    """The per-layer section of report.md."""
    lines = ["## Per-layer comparison", "", f"**{verdict(layers)}**", "", floors_line(layers), ""]
    note = state_note(layers)
    if note:
        lines += [note, ""]
    lines += [markdown_table(header(layers), rows(layers)), ""]
    return "\n".join(lines)
