"""Accuracy of real trained models through bridge: torch ⇄ ONNX Runtime ⇄ LiteRT, per mode.

    .venv/bin/python tools/eval_accuracy.py                       # every model, every mode
    .venv/bin/python tools/eval_accuracy.py --models fashion_mnist --modes fp32 int8
    .venv/bin/python tools/eval_accuracy.py --models fashion_mnist --modes fp32 int8 qat_fx qat_pt2e

Prints a table (model, mode, torch, ORT, TFLite, drop in points, .tflite size) and writes
tools/results/accuracy.json: the rows measured now replace the rows of the same model and mode
already there, other rows are kept (`--fresh` drops them). Needs the assets of
`bash ci/assets.sh`; touches no network. int8 and int16x8 calibrate on each model's own
calibration split (`Dataset.calibration`, disjoint from the evaluation samples; convert()
holds out its first 3 samples for verification).
Metric: top-1 % (EfficientNet: on labelled photo crops; "agree" is the % of samples whose top-1
equals torch's); for MiniLM the linear-probe top-1 % and the embedding cosine to torch fp32.
QAT rows (`qat_fx`, `qat_pt2e`, Fashion-MNIST only; recipe in tools/_qat_eval.py): the float
model fine-tuned with quantization-aware training and converted by bridge.convert_qat; `torch` is
the float model, and the row adds the fake-quant torch model's score and its top-1 agreement
with the .tflite (`fakequant`, `fakequant_agree`). PT2E needs torchao.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools._qat_eval import QAT_MODES, qat_row  # noqa: E402

if TYPE_CHECKING:
    from models.real.evaluate import Row

log = logging.getLogger("eval_accuracy")

MODES = ("fp32", "fp16", "dynamic", "int8", "int16x8", *QAT_MODES)
QAT_MODELS = ("fashion_mnist",)
MODELS = ("digits_mnist", "digits_opencv", "fashion_mnist", "efficientnet_lite0", "minilm")
# Evaluation samples per model by default: batch-1 loops stay within minutes on 2 cores.
LIMITS = {"efficientnet_lite0": 90, "minilm": 400}
DEFAULT_OUT = ROOT / "tools" / "results" / "accuracy.json"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    rows: list[dict[str, Any]] = []
    from models.real.assets import cache_dir

    work = Path(args.work) if args.work else cache_dir() / "accuracy"
    for name in args.models:
        for mode in args.modes:
            if mode in QAT_MODES and name not in QAT_MODELS:
                continue
            limit = args.limit or LIMITS.get(name)
            if mode in QAT_MODES:
                row = qat_row(mode, work / name / mode, limit=limit)
            else:
                row = _evaluate(name, mode, work, limit=limit).to_dict()
            rows.append(row)
            print(_line(row), flush=True)
    kept = [] if args.fresh else previous_rows(args.out)
    rows = merge_rows(kept, rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"environment": _environment(), "rows": rows}, indent=1))
    print()
    print(render_table(rows))
    print(f"\nwrote {args.out}")
    return 1 if any(r["error"] for r in rows) else 0


def previous_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of an earlier results file (none if it is missing or unreadable)."""
    try:
        return list(json.loads(path.read_text())["rows"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def merge_rows(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`old` with each row of the same (model, mode) as a `new` row replaced by it, ordered by
    MODELS and then MODES (others last, in their order)."""
    by_key = {(r["model"], r["mode"]): r for r in old}
    by_key.update({(r["model"], r["mode"]): r for r in new})

    def rank(key: tuple[str, str]) -> tuple[int, int]:
        model, mode = key
        return (
            MODELS.index(model) if model in MODELS else len(MODELS),
            MODES.index(mode) if mode in MODES else len(MODES),
        )

    return [by_key[k] for k in sorted(by_key, key=rank)]


def _evaluate(name: str, mode: str, work: Path, *, limit: int | None) -> Row:
    """One model × mode in a child process (a native crash fails that row only); torch's
    outputs are cached in the work folder, so each model runs in torch once."""
    from models.real.isolated import evaluate_isolated

    t0 = time.perf_counter()
    row = evaluate_isolated(name, mode, work / name / mode, limit=limit, cache=work / "cache")
    log.info("%s %s: %.1f s", name, mode, time.perf_counter() - t0)
    return row


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--modes", nargs="+", default=list(MODES))
    p.add_argument("--limit", type=int, default=None, help="evaluation samples per model")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--fresh", action="store_true", help="drop the rows already in --out")
    p.add_argument("--work", help="folder for conversions and torch outputs (default: the cache)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


HEADER = ("model", "mode", "metric", "n", "torch", "ORT", "TFLite", "drop", "agree/cos", "MB")


def _cell(score: dict[str, Any] | None) -> str:
    return "-" if score is None else f"{score['metric']:.2f}"


def _extra(row: dict[str, Any]) -> str:
    t = row["tflite"]
    if t is None:
        return "-"
    if t["cos_mean"] is not None:
        return f"cos {t['cos_mean']:.4f} (min {t['cos_min']:.3f})"
    if "fakequant" in row:
        fq = row["fakequant"]["metric"]
        return f"agree {t['agree']:.2f}; fake-quant {fq:.2f}, agree {row['fakequant_agree']:.2f}"
    return f"agree {t['agree']:.2f}"


def _line(row: dict[str, Any]) -> str:
    if row["error"]:
        return f"{row['model']} {row['mode']}: FAILED {row['error'][:300]}"
    return (
        f"{row['model']} {row['mode']}: torch {_cell(row['torch'])} ORT {_cell(row['ort'])} "
        f"TFLite {_cell(row['tflite'])} drop {row['drop']:+.2f} {_extra(row)}"
    )


def render_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of the rows."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in rows:
        drop = "-" if r["drop"] is None else f"{r['drop']:+.2f}"
        mb = "-" if r["tflite_mb"] is None else f"{r['tflite_mb']:.2f}"
        extra = "error: " + r["error"][:80] if r["error"] else _extra(r)
        cells = (
            r["model"], r["mode"], r["metric"], str(r["samples"]), _cell(r["torch"]),
            _cell(r["ort"]), _cell(r["tflite"]), drop, extra, mb,
        )  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _environment() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    env = {"python": platform.python_version(), "machine": platform.machine()}
    for pkg in ("torch", "onnx", "onnxruntime", "ai-edge-litert", "onnx2tf", "numpy", "torchao"):
        try:
            env[pkg] = version(pkg)
        except PackageNotFoundError:
            env[pkg] = "not installed"
    env["time"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    return env


if __name__ == "__main__":
    sys.exit(main())
