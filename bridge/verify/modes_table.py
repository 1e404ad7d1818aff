"""Compare the modes of one model, each converted into its own folder OUT/<mode>/.

One row per mode: .tflite size, median LiteRT latency (1 thread), the worst torch ⇄ LiteRT SQNR
over the outputs, the number of TRANSPOSE operators and of operators computing on float
activations. `write_summary` writes OUT/report.md and OUT/report.html.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bridge.errors import ModelLoadError
from bridge.verify.report import markdown_table, table

log = logging.getLogger(__name__)

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
    from bridge.runtime import tflite_io

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
    from bridge.api import FILES
    from bridge.contract import IOContract
    from bridge.runtime.runners import LiteRTRunner
    from bridge.verify.folder import _load_samples

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
    from bridge.api import FILES
    from bridge.runtime import tflite_io

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
    from bridge.verify.layer_report import verdict

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


def write_summary(
    out_dir: str | Path, modes: Sequence[str], *, errors: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Write OUT/report.md and OUT/report.html comparing `modes`; returns the summary."""
    from bridge.verify.html import render_modes_html

    root = Path(out_dir)
    summary = summarize(root, modes, errors=errors)
    root.mkdir(parents=True, exist_ok=True)
    for name, text in (
        ("report.md", render_markdown(summary)),
        ("report.html", render_modes_html(summary)),
    ):
        tmp = root / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, root / name)
    return summary


def convert_modes(
    model: Any,
    example_inputs: Sequence[Any],
    out_dir: str | Path,
    modes: Sequence[str],
    *,
    calibration: Any = None,
    **options: Any,
) -> dict[str, Any]:
    """`bridge.convert` once per mode into OUT/<mode>/, then OUT/report.md and OUT/report.html.

    A mode that fails (parity or any BridgeError) is recorded in the summary with its message
    and the others still run. Returns the summary; "failed" lists the modes that failed.
    """
    import bridge
    from bridge.api import MODES
    from bridge.errors import BridgeError, ConfigError

    if not modes or any(m not in MODES for m in modes):
        raise ConfigError(f"modes {list(modes)}: choose from {', '.join(MODES)}")
    if calibration is not None and not isinstance(calibration, str | os.PathLike | list | tuple):
        calibration = list(calibration)  # every mode reads it again
    root = Path(out_dir)
    errors: dict[str, str] = {}
    for mode in dict.fromkeys(modes):
        log.info("mode %s → %s", mode, root / mode)
        needs_data = mode in ("int8", "int16x8")
        try:
            bridge.convert(
                model,
                example_inputs,
                root / mode,
                quantize=mode,
                calibration=calibration if needs_data else None,
                **options,
            )
        except BridgeError as e:
            log.error("mode %s failed: %s", mode, e)
            errors[mode] = str(e)
    summary = write_summary(root, list(dict.fromkeys(modes)), errors=errors)
    summary["failed"] = sorted(errors)
    return summary
