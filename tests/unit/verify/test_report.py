"""verify.report: report.md from a report dict: the summary line, one parity row per pair and
output with its worst sample, the I/O contract, failures, operators and float fallbacks."""

from __future__ import annotations

import copy
from typing import Any

from bridge.runtime import tolerances
from bridge.verify.report import PARITY_HEADER, parity_rows, render_markdown, summary_line

FLOOR = tolerances.floor("int8", "qdq_vs_tflite")


def _comparison(sqnr: float, *, lsb: tuple[float, float] | None = None) -> dict[str, Any]:
    return {
        "sqnr_db": sqnr,
        "max_abs": 0.0123456,
        "cosine": 0.99999912,
        "top1": 0.75,
        "lsb_max": lsb[0] if lsb else None,
        "lsb_p99": lsb[1] if lsb else None,
        "min_sqnr_db": FLOOR,
        "passed": sqnr >= FLOOR,
        "sample": 2,
        "samples": 5,
    }


REPORT: dict[str, Any] = {
    "model": "TinyNet",
    "mode": "int8",
    "layout": "nchw",
    "sizes": {"tflite_bytes": 2_500_000},
    "seconds": {"export": 0.5, "total": 12.34},
    "passed": False,
    "tflite_contract": {
        "inputs": [{"name": "x", "shape": [1, 3, 8, 8], "dtype": "float32", "layout": "nchw"}],
        "outputs": [{"name": "y", "shape": [1, 10], "dtype": "float32", "layout": "nc"}],
    },
    "parity": {
        "torch_vs_ort": {"y": _comparison(140.0)},
        "qdq_vs_tflite": {"y": _comparison(FLOOR - 3.0, lsb=(4.0, 2.5))},
    },
    "failures": ["qdq_vs_tflite y: SQNR below floor"],
    "lowering": {
        "op_counts": {"CONV_2D": 2, "ADD": 1},
        "float_ops": [{"op": "GELU", "tensor": "/act/Gelu", "reason": "no int8 kernel"}],
    },
}


def test_parity_rows_one_per_pair_and_output_in_header_order() -> None:
    rows = parity_rows(REPORT)
    assert len(rows) == 2
    assert all(len(r) == len(PARITY_HEADER) for r in rows)
    torch_ort, qdq_tfl = rows
    assert torch_ort == [
        "torch ⇄ ort",
        "y",
        "140.0",
        "0.0123",
        "0.999999",
        "0.75",
        "",
        f"{FLOOR:.1f}",
        "2 of 5",
        "PASS",
    ]
    assert qdq_tfl[0] == "qdq ⇄ tflite"
    assert qdq_tfl[2] == f"{FLOOR - 3.0:.1f}"
    assert qdq_tfl[6] == "4.0/2.5"
    assert qdq_tfl[-1] == "FAIL"


def test_parity_rows_leave_top1_and_sample_empty_when_absent() -> None:
    c = _comparison(90.0)
    c.update(top1=None, sample=None)
    row = parity_rows({"parity": {"torch_vs_tflite": {"out": c}}})[0]
    assert row[5] == "" and row[8] == ""


def test_summary_line_size_time_verdict() -> None:
    assert summary_line(REPORT) == "TinyNet [int8, nchw]: 2.50 MB, 12.3 s, FAILED"
    ok = {**REPORT, "passed": True, "model": None}
    assert summary_line(ok) == "model [int8, nchw]: 2.50 MB, 12.3 s, verified"


def test_summary_line_warns_about_stateful_tensors() -> None:
    report = copy.deepcopy(REPORT)
    report["lowering"]["stateful_tensors"] = ["h0", "c0"]
    assert "STATEFUL: 2 variable tensors" in summary_line(report)


def test_markdown_has_every_section() -> None:
    text = render_markdown(REPORT)
    lines = text.splitlines()
    assert lines[0] == "# bridge report: " + summary_line(REPORT)
    assert "| input | x | 1x3x8x8 | float32 | nchw |" in lines
    assert "| output | y | 1x10 | float32 | nc |" in lines
    assert "- qdq_vs_tflite y: SQNR below floor" in lines
    assert "ADD 1, CONV_2D 2" in lines
    assert "- GELU `/act/Gelu`: no int8 kernel" in lines
    assert "export 0.50, total 12.34" in lines
    assert sum(line.startswith("| qdq ⇄ tflite | y |") for line in lines) == 1


def test_markdown_of_a_bare_report_has_no_optional_sections() -> None:
    text = render_markdown({"mode": "fp32", "layout": "nchw", "passed": True})
    assert "## Parity" in text
    for section in ("Failures", "Per-layer", "TFLite operators", "Left in float", "Time"):
        assert section not in text
