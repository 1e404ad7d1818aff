"""Compare the modes of one model, each converted into its own folder OUT/<mode>/.

One row per mode: .tflite size, median LiteRT latency (1 thread), the worst torch ⇄ LiteRT SQNR
over the outputs, the number of TRANSPOSE operators and of operators computing on float
activations, read from each mode's folder (`bridge.compare` converts and writes the summary).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bridge.contract import IOContract
from bridge.errors import ModelLoadError
from bridge.outdir import FILES
from bridge.runtime import tflite_io
from bridge.runtime.runners import LiteRTRunner
from bridge.verify.folder import _load_samples
from bridge.verify.layer_report import verdict
from bridge.verify.tables import markdown_table, table

#: Latency: untimed warm-up invokes, then timed invokes until either bound is reached.
WARMUP_RUNS = 2
MAX_RUNS = 30
MIN_RUNS = 5
MAX_BENCH_SECONDS = 3.0

HEADER = ["mode", "size MB", "latency ms", "SQNR vs torch dB", "TRANSPOSE", "float ops", "result"]
#: Operators that only move data between float and integer; not "left in float".
BOUNDARY_OPS = frozenset({"QUANTIZE", "DEQUANTIZE"})


def float_op_count(data: bytes) -> int:
    """Operators of the main subgraph that write a float32 activation (QUANTIZE/DEQUANTIZE
    excluded): all of an fp32 model, the hybrid and float fallbacks of a quantized one."""
    model = tflite_io.load(data)
    sg = model.subgraphs[0]
    count = 0
    for op in sg.operators or []:
        if tflite_io.op_name(model, op) in BOUNDARY_OPS:
            continue
        outs = [sg.tensors[i] for i in op.outputs if i >= 0]
        if any(t.type == 0 and tflite_io.buffer_array(model, t) is None for t in outs):
            count += 1
    return count


def bench_ms(folder: Path, report: Mapping[str, Any]) -> float:
    """Median LiteRT invoke time in ms (1 thread, default delegates) on the first stored input."""
    contract = IOContract.from_dict(report["contract"])
    feeds, _ = _load_samples(folder / FILES["samples"], contract)
    runner = LiteRTRunner(
        folder / FILES["tflite"],
        IOContract.from_dict(report["tflite_contract"]),
        user_contract=contract,
        num_threads=1,
    )
    runner.run(feeds[0])  # sets the inputs
    interp = runner.interpreter
    for _ in range(WARMUP_RUNS):
        interp.invoke()
    times: list[float] = []
    deadline = time.perf_counter() + MAX_BENCH_SECONDS
    while len(times) < MAX_RUNS and (len(times) < MIN_RUNS or time.perf_counter() < deadline):
        t0 = time.perf_counter()
        interp.invoke()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(statistics.median(times))


def mode_row(folder: Path, mode: str, *, latency: bool = True) -> dict[str, Any]:
    """The comparison row of one conversion folder (its report is kept under "report")."""
    try:
        report = json.loads((folder / FILES["report"]).read_text())
        data = (folder / FILES["tflite"]).read_bytes()
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot read the {mode} conversion in {folder}: {e}") from e
    pair = report.get("parity", {}).get("torch_vs_tflite", {})
    sqnr = min((c["sqnr_db"] for c in pair.values()), default=None)
    return {
        "mode": mode,
        "size_mb": len(data) / 1e6,
        "latency_ms": bench_ms(folder, report) if latency else None,
        "sqnr_db": sqnr,
        "transposes": tflite_io.op_histogram(data).get("TRANSPOSE", 0),
        "float_ops": float_op_count(data),
        "passed": bool(report.get("passed")),
        "report": report,
    }


def summarize(
    out_dir: str | Path,
    modes: Sequence[str],
    *,
    errors: Mapping[str, str] | None = None,
    latency: bool = True,
) -> dict[str, Any]:
    """{"model", "rows"}: a row per mode from OUT/<mode>/, or the error that stopped it."""
    root = Path(out_dir)
    rows: list[dict[str, Any]] = []
    model = None
    for mode in modes:
        if errors and mode in errors:
            rows.append({"mode": mode, "passed": None, "error": errors[mode]})
            continue
        row = mode_row(root / mode, mode, latency=latency)
        model = model or row["report"].get("model")
        rows.append(row)
    return {"model": model, "rows": rows}


def table_rows(rows: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """The rows as text cells, in HEADER order."""
    out = []
    for r in rows:
        if r.get("passed") is None:
            out.append([r["mode"], "", "", "", "", "", "ERROR: " + r.get("error", "")])
            continue
        out.append(
            [
                r["mode"],
                f"{r['size_mb']:.3f}",
                "" if r["latency_ms"] is None else f"{r['latency_ms']:.3g}",
                "" if r["sqnr_db"] is None else f"{r['sqnr_db']:.1f}",
                str(r["transposes"]),
                str(r["float_ops"]),
                "PASS" if r["passed"] else "FAIL",
            ]
        )
    return out


def render_text(summary: Mapping[str, Any]) -> str:
    return table(HEADER, table_rows(summary["rows"]))


def render_markdown(summary: Mapping[str, Any]) -> str:
    """The top-level report.md: the modes table, then each mode's per-layer verdict."""
    lines = [f"# bridge modes: {summary.get('model') or 'model'}", ""]
    lines += [markdown_table(HEADER, table_rows(summary["rows"])), ""]
    lines += [
        "latency: median LiteRT invoke time, 1 thread; SQNR: worst output, torch ⇄ LiteRT; "
        "float ops: operators computing on float activations. Details: `<mode>/report.md`.",
        "",
    ]
    for r in summary["rows"]:
        layers = (r.get("report") or {}).get("layers")
        if layers:
            lines += [f"- **{r['mode']}**: {verdict(layers)}"]
    return "\n".join(lines) + "\n"
