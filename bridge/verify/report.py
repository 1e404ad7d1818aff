"""Render a conversion report (the dict written as report.json) for people."""

from __future__ import annotations

from typing import Any

from bridge.verify.layer_report import render_markdown as render_layers
from bridge.verify.tables import markdown_table


def parity_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per (runtime pair, output), its worst sample's numbers: pair, output, SQNR,
    max abs, cosine, top-1 (over all samples), LSB, floor, which sample of how many, ok."""
    rows = []
    for pair, outputs in report.get("parity", {}).items():
        for name, c in outputs.items():
            top1 = "" if c.get("top1") is None else f"{c['top1']:.2f}"
            lsb = "" if c.get("lsb_max") is None else f"{c['lsb_max']:.1f}/{c['lsb_p99']:.1f}"
            rows.append(
                [
                    pair.replace("_vs_", " ⇄ "),
                    name,
                    f"{c['sqnr_db']:.1f}",
                    f"{c['max_abs']:.3g}",
                    f"{c['cosine']:.6f}",
                    top1,
                    lsb,
                    f"{c['min_sqnr_db']:.1f}",
                    _worst(c),
                    "PASS" if c["passed"] else "FAIL",
                ]
            )
    return rows


PARITY_HEADER = [
    "pair",
    "output",
    "SQNR dB",
    "max abs",
    "cosine",
    "top-1",
    "LSB max/p99",
    "floor dB",
    "worst sample",
    "result",
]


def _worst(c: dict[str, Any]) -> str:
    """ "i of n" (sample 0 is the example input); empty for reports written before per-sample
    judging."""
    return "" if c.get("sample") is None else f"{c['sample']} of {c['samples']}"


def summary_line(report: dict[str, Any]) -> str:
    size = report.get("sizes", {}).get("tflite_bytes", 0) / 1e6
    secs = report.get("seconds", {}).get("total", 0.0)
    verdict = "verified" if report.get("passed") else "FAILED"
    state = report.get("lowering", {}).get("stateful_tensors")
    stateful = (
        f"; STATEFUL: {len(state)} variable tensors keep state between invokes, call "
        "Interpreter.reset_all_variables() before each one"
        if state
        else ""
    )
    return (
        f"{report.get('model') or 'model'} [{report.get('mode')}, {report.get('layout')}]: "
        f"{size:.2f} MB, {secs:.1f} s, {verdict}{stateful}"
    )


def render_markdown(report: dict[str, Any]) -> str:
    """report.md: the I/O contract, parity per output and runtime pair, and lowering facts."""
    lines = [f"# bridge report: {summary_line(report)}", ""]
    lines += ["## I/O contract", ""]
    io_rows = []
    for kind in ("inputs", "outputs"):
        for t in report.get("tflite_contract", {}).get(kind, []):
            io_rows.append(
                [
                    kind[:-1],
                    t["name"],
                    "x".join(str(d) for d in t["shape"]),
                    t["dtype"],
                    t["layout"],
                ]
            )
    lines += [markdown_table(["kind", "name", "shape", "dtype", "layout"], io_rows), ""]
    lines += ["## Parity", "", markdown_table(PARITY_HEADER, parity_rows(report)), ""]
    if report.get("failures"):
        lines += ["**Failures:**", ""] + [f"- {f}" for f in report["failures"]] + [""]
    if report.get("layers"):
        lines += [render_layers(report["layers"])]
    low = report.get("lowering", {})
    if low.get("op_counts"):
        ops = ", ".join(f"{k} {v}" for k, v in sorted(low["op_counts"].items()))
        lines += ["## TFLite operators", "", ops, ""]
    if low.get("float_ops"):
        lines += ["## Left in float", ""]
        lines += [
            f"- {f.get('op')} `{f.get('tensor', '')}`: {f.get('reason', '')}"
            for f in low["float_ops"]
        ] + [""]
    secs = report.get("seconds", {})
    if secs:
        lines += ["## Time (s)", "", ", ".join(f"{k} {v:.2f}" for k, v in secs.items()), ""]
    return "\n".join(lines)
