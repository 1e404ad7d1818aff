"""report.html / report.md rendering from report dicts: self-contained, complete, well-formed."""

from __future__ import annotations

import base64
import re
import struct
from html.parser import HTMLParser
from typing import Any

from bridge.verify import layer_report
from bridge.verify.html import render_html, render_modes_html
from bridge.verify.modes_table import HEADER, render_markdown, table_rows
from bridge.verify.plots import layer_plot
from bridge.verify.report import render_markdown as render_report_markdown

EXPLANATION = "first diverging layer conv2/Conv (Conv): Conversion error <here> & there."
VOID = {"meta", "img", "br", "hr", "link", "input"}


def _metrics(sqnr: float, lsb: float | None = None) -> dict[str, Any]:
    return {"sqnr_db": sqnr, "max_abs": 10 ** (-sqnr / 20), "lsb_max": lsb}


def layers(n: int = 3, *, diverge_at: int | None = 1) -> dict[str, Any]:
    """A per-layer result as `localize` returns it, for an int8 conversion."""
    rows = []
    for i in range(n):
        bad = diverge_at is not None and i >= diverge_at
        rows.append(
            {
                "index": i,
                "tensor": f"/conv{i}/Conv_output_0",
                "node": f"/conv{i}/Conv",
                "op": "Conv",
                "shape": [1, 8, 4, 4],
                "range": [-1.0, 2.0],
                "metrics": {
                    "ort_vs_qdq": _metrics(38.0 - i),
                    "qdq_vs_tflite": _metrics(5.0 if bad else 90.0, 40.0 if bad else 0.5),
                },
            }
        )
    found = None
    if diverge_at is not None:
        found = {
            "tensor": rows[diverge_at]["tensor"],
            "node": rows[diverge_at]["node"],
            "index": diverge_at,
            "explanation": EXPLANATION,
        }
    return {
        "mode": "int8",
        "links": [
            {
                "pair": "ort_vs_qdq",
                "ref": "ort",
                "cand": "qdq",
                "kind": "quantization",
                "floor": 15.0,
            },
            {
                "pair": "qdq_vs_tflite",
                "ref": "qdq",
                "cand": "tflite",
                "kind": "conversion",
                "floor": 30.0,
            },
        ],
        "labels": {"ort": "ORT", "qdq": "QDQ ORT", "tflite": "LiteRT"},
        "samples": 2,
        "rows": rows,
        "first_divergence": found,
    }


def report(**changes: Any) -> dict[str, Any]:
    comparison = {
        "sqnr_db": 31.2,
        "max_abs": 0.01,
        "cosine": 0.9999,
        "top1": 1.0,
        "min_sqnr_db": 30.0,
        "passed": True,
        "lsb_max": 1.0,
        "lsb_p99": 0.5,
    }
    base = {
        "bridge_version": "0.1.0",
        "model": "tiny",
        "mode": "int8",
        "layout": "NCHW",
        "passed": True,
        "failures": [],
        "tflite_contract": {
            "inputs": [
                {"name": "pixels", "shape": [1, 3, 8, 8], "dtype": "float32", "layout": "NCHW"}
            ],
            "outputs": [
                {"name": "scores", "shape": [1, 10], "dtype": "float32", "layout": "plain"}
            ],
        },
        "sizes": {"tflite_bytes": 12345},
        "seconds": {"export": 0.1, "total": 1.0},
        "parity": {"qdq_vs_tflite": {"scores": comparison}},
        "lowering": {"op_counts": {"CONV_2D": 2, "TRANSPOSE": 1}, "float_ops": []},
        "quantization": {
            "tensors": {
                "/conv0/Conv_output_0": {
                    "kind": "activation",
                    "dtype": "int8",
                    "range": [-1.0, 2.0],
                    "scale": [0.0118],
                    "zero_point": [-43],
                    "observer": "histogram",
                }
            }
        },
        "layers": layers(),
    }
    return {**base, **changes}


class _Checker(HTMLParser):
    """Collects <img> sources and links and checks that tags nest properly."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img":
            self.images.append(a.get("src") or "")
        if tag == "a":
            self.links.append(a.get("href") or "")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
        else:
            self.stack.pop()


def _check(html: str) -> _Checker:
    checker = _Checker()
    checker.feed(html)
    assert not checker.errors and not checker.stack, (checker.errors, checker.stack)
    assert not re.search(r"(src|href)=\"(https?:|//)", html), "external resource"
    assert "<link" not in html and "<script" not in html
    return checker


def _png_size(src: str) -> tuple[int, int]:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix)
    data = base64.b64decode(src[len(prefix) :])
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_single_report_is_self_contained_and_complete() -> None:
    html = render_html(report())
    checker = _check(html)
    assert len(checker.images) == 1
    width, height = _png_size(checker.images[0])
    assert width > 600 and height > 250, (width, height)
    for text in ("pixels", "1x3x8x8", "scores", "I/O contract", "CONV_2D", "verified"):
        assert text in html, text
    assert "Conversion error &lt;here&gt; &amp; there." in html  # escaped, not raw
    assert '<tr class="first">' in html and html.count('<tr class="miss">') == 1
    assert "[-1, 2]" in html  # the activation range table


def test_failed_report_without_layers_still_renders() -> None:
    html = render_html(
        report(passed=False, failures=["qdq_vs_tflite output 'scores': bad"], layers=None)
    )
    _check(html)
    assert "FAILED" in html and "not computed" in html and "bad" in html


def test_markdown_report_has_the_layer_table() -> None:
    md = render_report_markdown(report())
    assert "## Per-layer comparison" in md and EXPLANATION in md
    table_lines = [line for line in md.splitlines() if line.startswith("| ") and "/Conv" in line]
    assert len(table_lines) == 3
    assert layer_report.FIRST in table_lines[1] and layer_report.MISS in table_lines[2]
    assert "5.0!" in table_lines[1]  # the SQNR under its floor is marked


def test_text_table_columns() -> None:
    text = layer_report.render_text(layers(diverge_at=None))
    head = text.splitlines()[0]
    for col in ("ORT ⇄ QDQ ORT dB", "QDQ ORT ⇄ LiteRT dB", "max abs (QDQ ORT ⇄ LiteRT)", "LSB max"):
        assert col in head, col
    assert "no diverging layer: all 3 compared tensors meet their floors." in text
    assert "QDQ ORT ⇄ LiteRT ≥ 30 dB (conversion)" in text


def test_layer_plot_handles_many_layers() -> None:
    width, height = _png_size("data:image/png;base64," + layer_plot(layers(120, diverge_at=100)))
    assert width > 600 and height > 250


def _summary() -> dict[str, Any]:
    rows = [
        {
            "mode": "fp32",
            "size_mb": 0.43,
            "latency_ms": 0.21,
            "sqnr_db": 121.4,
            "transposes": 1,
            "float_ops": 10,
            "passed": True,
            "report": report(mode="fp32"),
        },
        {
            "mode": "int8",
            "size_mb": 0.12,
            "latency_ms": 0.09,
            "sqnr_db": 31.2,
            "transposes": 0,
            "float_ops": 0,
            "passed": False,
            "report": report(passed=False),
        },
        {"mode": "int16x8", "passed": None, "error": "LiteRT rejects <it>"},
    ]
    return {"model": "tiny", "rows": rows}


def test_modes_table_rows() -> None:
    rows = table_rows(_summary()["rows"])
    assert rows[0] == ["fp32", "0.430", "0.21", "121.4", "1", "10", "PASS"]
    assert rows[1][-1] == "FAIL" and rows[2][-1] == "ERROR: LiteRT rejects <it>"
    assert all(len(r) == len(HEADER) for r in rows)


def test_modes_report_html_and_markdown() -> None:
    summary = _summary()
    html = render_modes_html(summary)
    checker = _check(html)
    assert len(checker.images) == 1
    _png_size(checker.images[0])
    assert checker.links == [f"{m}/report.html" for m in ("fp32", "int8", "int16x8")]
    assert "LiteRT rejects &lt;it&gt;" in html
    md = render_markdown(summary)
    assert "| fp32 | 0.430 | 0.21 | 121.4 | 1 | 10 | PASS |" in md
    assert f"- **int8**: {EXPLANATION}" in md
