"""report.html: one self-contained page (inline CSS, plots as base64 PNG), viewable offline.

`render_html(report)` renders one conversion; `render_modes_html(summary)` renders the comparison
of several modes written by `bridge convert --modes`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from bridge.verify import layer_report
from bridge.verify.modes_table import HEADER, table_rows
from bridge.verify.plots import layer_plot, modes_plot
from bridge.verify.report import PARITY_HEADER, parity_rows, summary_line

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
 margin:0;color:#1d2330;background:#f6f7f9}
main{max-width:1120px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:0 0 10px}
section{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:16px 18px;margin:16px 0}
table{border-collapse:collapse;font-size:12.5px;width:100%}
th,td{border-bottom:1px solid #e6e9ee;padding:4px 8px;text-align:left;white-space:nowrap}
th{background:#f0f2f5;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.miss td{background:#fff4e5}tr.first td{background:#fde2e1;font-weight:600}
.badge{display:inline-block;padding:1px 9px;border-radius:10px;font-weight:600;color:#fff}
.pass{background:#1f9d55}.fail{background:#d64545}
.callout{border-left:4px solid #d64545;background:#fdf1f0;padding:8px 12px;margin:0 0 12px}
.callout.ok{border-color:#1f9d55;background:#eef8f1}
.muted{color:#667085;font-size:12.5px}img.plot{max-width:100%;display:block;margin:8px 0}
details summary{cursor:pointer;margin:8px 0}code{font-size:12px}
"""


def _cell(value: Any, cls: str = "") -> str:
    text = escape(str(value))
    if not cls and _numeric(str(value)):
        cls = "num"
    return f'<td class="{cls}">{text}</td>' if cls else f"<td>{text}</td>"


def _numeric(text: str) -> bool:
    try:
        float(text.rstrip(layer_report.MISS))
    except ValueError:
        return False
    return True


def table(
    header: Sequence[str], rows: Sequence[Sequence[Any]], row_classes: Sequence[str] = ()
) -> str:
    """An HTML table; PASS/FAIL cells become badges."""
    out = ["<table><thead><tr>", *(f"<th>{escape(h)}</th>" for h in header), "</tr></thead>"]
    out.append("<tbody>")
    for i, row in enumerate(rows):
        cls = row_classes[i] if i < len(row_classes) else ""
        out.append(f'<tr class="{cls}">' if cls else "<tr>")
        for v in row:
            if v in ("PASS", "FAIL"):
                out.append(f'<td><span class="badge {v.lower()}">{v}</span></td>')
            else:
                out.append(_cell(v))
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _page(title: str, body: list[str]) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body><main>"
        + "\n".join(body)
        + "</main></body></html>\n"
    )


def _badge(passed: bool) -> str:
    cls, text = ("pass", "verified") if passed else ("fail", "FAILED")
    return f'<span class="badge {cls}">{text}</span>'


def _img(png_b64: str, alt: str) -> str:
    return f'<img class="plot" alt="{escape(alt)}" src="data:image/png;base64,{png_b64}">'


def contract_section(report: Mapping[str, Any]) -> str:
    rows = []
    for kind in ("inputs", "outputs"):
        for t in report.get("tflite_contract", {}).get(kind, []):
            shape = "x".join("?" if d is None else str(d) for d in t["shape"])
            rows.append([kind[:-1], t["name"], shape, t["dtype"], t["layout"]])
    head = ["kind", "name", "shape", "dtype", "layout"]
    return f"<section><h2>I/O contract</h2>{table(head, rows)}</section>"


def parity_section(report: Mapping[str, Any]) -> str:
    body = table(PARITY_HEADER, parity_rows(dict(report)))
    fails = "".join(f"<li>{escape(f)}</li>" for f in report.get("failures", []))
    if fails:
        body += f"<p><b>Failures</b></p><ul>{fails}</ul>"
    return f"<section><h2>Parity per output and runtime pair</h2>{body}</section>"


def layers_section(layers: Mapping[str, Any] | None) -> str:
    """The verdict, the per-layer SQNR plot and the per-layer table."""
    if not layers or not layers.get("rows"):
        return "<section><h2>Per-layer error</h2><p class=muted>not computed</p></section>"
    found = layers.get("first_divergence")
    callout = "callout" if found else "callout ok"
    parts = [
        "<section><h2>Per-layer error</h2>",
        f'<div class="{callout}">{escape(layer_report.verdict(layers))}</div>',
        _img(layer_plot(layers), "SQNR per layer and runtime pair"),
        f"<p class=muted>{escape(layer_report.floors_line(layers))}</p>",
    ]
    rows = layer_report.rows(layers)
    classes = ["first" if r[-1] == layer_report.FIRST else ("miss" if r[-1] else "") for r in rows]
    parts.append(
        f"<details{' open' if found else ''}><summary>per-layer table ({len(rows)} tensors)"
        f"</summary>{table(layer_report.header(layers), rows, classes)}</details></section>"
    )
    return "".join(parts)


def lowering_section(report: Mapping[str, Any]) -> str:
    low = report.get("lowering", {})
    parts = ["<section><h2>TFLite model</h2>"]
    ops = low.get("op_counts") or low.get("float_lowering", {}).get("op_counts") or {}
    if ops:
        parts.append(table(["operator", "count"], sorted(ops.items())))
    floats = low.get("float_ops") or []
    if floats:
        rows = [[f.get("op", ""), f.get("tensor", ""), f.get("reason", "")] for f in floats]
        parts.append("<p><b>Left in float</b></p>" + table(["op", "tensor", "reason"], rows))
    size = report.get("sizes", {}).get("tflite_bytes")
    if size:
        parts.append(f"<p class=muted>{size / 1e6:.3f} MB</p>")
    return "".join(parts) + "</section>"


def quantization_section(report: Mapping[str, Any]) -> str:
    q = report.get("quantization")
    if not q:
        return ""
    rows = [
        [
            name,
            f["dtype"],
            f"[{f['range'][0]:.4g}, {f['range'][1]:.4g}]",
            f"{f['scale'][0]:.4g}",
            f["zero_point"][0],
            f.get("observer", ""),
        ]
        for name, f in q.get("tensors", {}).items()
        if f.get("kind") == "activation"
    ]
    head = ["tensor", "dtype", "range", "scale", "zero point", "observer"]
    return (
        "<section><h2>Quantization</h2><details><summary>activation ranges "
        f"({len(rows)} tensors)</summary>{table(head, rows)}</details></section>"
    )


def render_html(report: Mapping[str, Any]) -> str:
    """The report.html of one conversion folder."""
    title = f"bridge report: {report.get('model') or 'model'} [{report.get('mode')}]"
    secs = report.get("seconds", {})
    body = [
        f"<h1>{escape(title)}</h1>",
        f"<p>{escape(summary_line(dict(report)))} {_badge(bool(report.get('passed')))}</p>",
        contract_section(report),
        parity_section(report),
        layers_section(report.get("layers")),
        lowering_section(report),
        quantization_section(report),
    ]
    if secs:
        times = ", ".join(f"{k} {v:.2f} s" for k, v in secs.items())
        body.append(
            f"<p class=muted>time: {escape(times)}; bridge {report.get('bridge_version', '')}</p>"
        )
    return _page(title, body)


def render_modes_html(summary: Mapping[str, Any]) -> str:
    """The top-level report.html of `bridge convert --modes`: one row per mode, bar charts, and
    each mode's parity and per-layer verdict."""
    title = f"bridge modes: {summary.get('model') or 'model'}"
    rows = summary["rows"]
    body = [f"<h1>{escape(title)}</h1>"]
    body.append(
        "<section><h2>Modes</h2>"
        + table(HEADER, table_rows(rows))
        + _img(modes_plot([r for r in rows if r.get("passed") is not None]), "modes compared")
        + "<p class=muted>latency: median LiteRT invoke time, 1 thread; SQNR: worst output, "
        "torch ⇄ LiteRT; float ops: operators computing on float activations.</p></section>"
    )
    for r in rows:
        link = f'<a href="{escape(r["mode"])}/report.html">{escape(r["mode"])}/report.html</a>'
        head = f"<section><h2>{escape(r['mode'])} {_badge(bool(r.get('passed')))}</h2><p>{link}</p>"
        report = r.get("report")
        if report is None:
            body.append(head + f"<p>{escape(r.get('error', ''))}</p></section>")
            continue
        verdict = layer_report.verdict(report["layers"]) if report.get("layers") else ""
        body.append(
            head
            + table(PARITY_HEADER, parity_rows(dict(report)))
            + (f"<p class=muted>{escape(verdict)}</p>" if verdict else "")
            + "</section>"
        )
    return _page(title, body)
