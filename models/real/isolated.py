"""Evaluate one real model × mode in a child process.

LiteRT and ONNX Runtime are native code: a bad .tflite can crash the interpreter with a
segmentation fault, which no `except` catches. Run in a child, such a crash becomes a Row whose
`error` names the signal, and the caller (the tool, the test session) goes on.

    python -m models.real.isolated MODEL MODE OUT_DIR --row ROW.json [--limit N] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from models.real.evaluate import Row

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 3600


def evaluate_isolated(
    name: str,
    mode: str,
    out_dir: Path,
    *,
    limit: int | None = None,
    cache: Path | None = None,
    timeout: float = TIMEOUT,
) -> Row:
    """Evaluator(name).evaluate(mode, out_dir) run in a child process; never raises for it."""
    with tempfile.TemporaryDirectory(prefix="bridge-eval-") as tmp:
        row_file = Path(tmp) / "row.json"
        cmd = [sys.executable, "-m", __name__, name, mode, str(out_dir), "--row", str(row_file)]
        cmd += ["--limit", str(limit)] if limit else []
        cmd += ["--cache", str(cache)] if cache else []
        try:
            done = subprocess.run(
                cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            return Row(name, mode, "-", 0, error=f"timed out after {timeout:.0f} s")
        if row_file.exists():
            return Row.from_dict(json.loads(row_file.read_text()))
        return Row(name, mode, "-", 0, error=_death(done))


def _death(done: subprocess.CompletedProcess) -> str:
    """Why the child wrote no row: the signal or exit code and the end of its stderr."""
    rc = done.returncode
    how = f"died of {signal.Signals(-rc).name}" if rc < 0 else f"exited {rc}"
    lines = [ln for ln in done.stderr.splitlines() if ln.strip() and not ln.startswith("I0000")]
    return f"the evaluation process {how}: " + " | ".join(lines[-3:])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="evaluate one real model in one mode")
    p.add_argument("name")
    p.add_argument("mode")
    p.add_argument("out_dir", type=Path)
    p.add_argument("--row", type=Path, required=True, help="where to write the Row as JSON")
    p.add_argument("--limit", type=int)
    p.add_argument("--cache", type=Path)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import models.real
    from models.real.evaluate import Evaluator

    evaluator = Evaluator(args.name, models.real.get(args.name), limit=args.limit, cache=args.cache)
    try:
        row = evaluator.evaluate(args.mode, args.out_dir)
    except Exception as e:  # a bug in a stage: keep its traceback in the log, report the row
        log.exception("%s %s: unexpected failure", args.name, args.mode)
        row = Row(args.name, args.mode, "-", evaluator.samples, error=f"{type(e).__name__}: {e}")
    args.row.write_text(json.dumps(row.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
