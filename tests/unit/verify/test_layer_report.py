"""verify.layer_report: the per-layer table (a column per link, "!" on a miss, the first
divergence marked), its verdict, the floors line and the variable-tensor note."""

from __future__ import annotations

from typing import Any

from bridge.runtime import tolerances
from bridge.verify.divergence import LAYER_DROP_DB
from bridge.verify.layer_report import (
    FIRST,
    MAX_NAMES,
    MISS,
    floors_line,
    header,
    pair_label,
    render_markdown,
    render_text,
    rows,
    state_note,
    verdict,
)

QUANT = tolerances.floor("int8", "torch_vs_qdq")
CONV = tolerances.floor("int8", "qdq_vs_tflite")
LABELS = {"torch": "torch", "ort": "ORT", "qdq": "QDQ", "tflite": "LiteRT"}
LINKS = [
    {"pair": "ort_vs_qdq", "ref": "ort", "cand": "qdq", "kind": "quantization", "floor": QUANT},
    {"pair": "qdq_vs_tflite", "ref": "qdq", "cand": "tflite", "kind": "conversion", "floor": CONV},
    {"pair": "ort_vs_tflite", "ref": "ort", "cand": "tflite", "kind": "", "floor": None},
]


def _m(sqnr: float, lsb: float | None = None) -> dict[str, Any]:
    return {"sqnr_db": sqnr, "max_abs": 0.01234, "lsb_max": lsb, "lsb_rms": None}


def _layers(first: dict[str, Any] | None = None) -> dict[str, Any]:
    metrics = [
        {
            "ort_vs_qdq": _m(QUANT + 10),
            "qdq_vs_tflite": _m(CONV + 10, 1.0),
            "ort_vs_tflite": _m(30),
        },
        {"ort_vs_qdq": _m(QUANT - 2), "qdq_vs_tflite": _m(CONV + 10, 0.5)},
        {},  # fused away: no runtime holds it
    ]
    return {
        "mode": "int8",
        "links": LINKS,
        "labels": LABELS,
        "samples": 4,
        "first_divergence": first,
        "rows": [
            {"index": i, "tensor": f"t{i}", "node": f"/features/features.{i}/Conv", "op": "Conv",
             "shape": [1, 8, 4, 4], "metrics": m}
            for i, m in enumerate(metrics)
        ],
    }  # fmt: skip


def test_pair_label_uses_the_labels() -> None:
    assert pair_label(LINKS[1], LABELS) == "QDQ ⇄ LiteRT"
    assert pair_label(LINKS[1], {}) == "qdq ⇄ tflite"


def test_header_has_a_column_per_link_and_the_last_judged_links_max_abs_and_lsb() -> None:
    assert header(_layers()) == [
        "#", "layer", "op", "shape", "ORT ⇄ QDQ dB", "QDQ ⇄ LiteRT dB", "ORT ⇄ LiteRT dB",
        "max abs (QDQ ⇄ LiteRT)", "LSB max", "",
    ]  # fmt: skip


def test_rows_mark_misses_and_leave_missing_metrics_empty() -> None:
    got = rows(_layers())
    assert got[0] == [
        "0", "features.0/Conv", "Conv", "1x8x4x4", f"{QUANT + 10:.1f}", f"{CONV + 10:.1f}",
        "30.0", "0.0123", "1.0", "",
    ]  # fmt: skip
    assert got[1][4] == f"{QUANT - 2:.1f}{MISS}" and got[1][-1] == MISS
    assert got[1][6] == ""  # no ORT ⇄ LiteRT value
    assert got[2][4:] == ["", "", "", "", "", ""]


def test_first_divergence_is_marked_and_explained() -> None:
    layers = _layers({"tensor": "t1", "explanation": "first diverging layer features.1/Conv"})
    assert rows(layers)[1][-1] == FIRST
    assert verdict(layers) == "first diverging layer features.1/Conv"


def test_verdict_counts_accumulated_misses_and_uncompared_tensors() -> None:
    text = verdict(_layers())
    assert text.startswith("no diverging layer: every output meets its floors; 1 of the 2 ")
    assert f"within {LAYER_DROP_DB:.0f} dB of its inputs" in text
    assert text.endswith("1 of the 3 tensors have no counterpart to compare with.")
    clean = _layers()
    clean["rows"] = clean["rows"][:1]
    assert verdict(clean) == "no diverging layer: all 1 compared tensors meet their floors."


def test_floors_line_lists_judged_links_only() -> None:
    assert floors_line(_layers()) == (
        f"floors: ORT ⇄ QDQ ≥ {QUANT:.0f} dB (quantization), "
        f"QDQ ⇄ LiteRT ≥ {CONV:.0f} dB (conversion); 4 samples"
    )


def test_state_note_names_at_most_max_names_tensors() -> None:
    assert state_note(_layers()) is None
    layers = {**_layers(), "tflite_state": [f"h{i}" for i in range(MAX_NAMES + 2)]}
    note = state_note(layers)
    assert note is not None
    assert f"in {MAX_NAMES + 2} variable tensors (h0, h1, h2, h3, ...)" in note
    assert "reset_all_variables" in render_text(layers)


def test_text_and_markdown_render_the_same_rows() -> None:
    layers = _layers()
    text = render_text(layers).splitlines()
    assert len(text) == 2 + 3 + 2  # header, rule, 3 rows, floors, verdict
    md = render_markdown(layers).splitlines()
    assert md[0] == "## Per-layer comparison"
    assert md[2] == f"**{verdict(layers)}**"
    assert sum(line.startswith("| ") for line in md) == 1 + 3
