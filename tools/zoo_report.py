"""Convert every zoo model in the given modes and tabulate SQNR, size and conversion time.

    python tools/zoo_report.py [--modes fp32,fp16,int8] [--models a,b]

Prints a table and writes tools/results/zoo_report.json. A conversion that bridge refuses
(ParityError or another BridgeError) is a row with its one-line reason, not a crash.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

import bridge
import models
from tools._bench import print_table, write_json

CALIBRATION_SAMPLES = 8


def row(name: str, mode: str, work: Path) -> dict:
    model, inputs = models.get(name)
    calib = None
    if mode in ("int8", "int16x8"):
        rng = np.random.default_rng(1234)
        calib = [
            tuple(
                rng.standard_normal(s.concrete_shape()).astype(np.float32)
                for s in models.info(name).inputs
            )
            for _ in range(CALIBRATION_SAMPLES)
        ]
    t0 = time.perf_counter()
    try:
        conv = bridge.convert(
            model,
            inputs,
            work / name / mode,
            quantize=mode,
            calibration=calib,
            overwrite=True,
            **models.convert_options(name),
        )
    except bridge.BridgeError as e:
        return {"model": name, "mode": mode, "error": f"{type(e).__name__}: {str(e)[:150]}"}
    r = conv.report
    pair = r["parity"]["torch_vs_tflite"]
    return {
        "model": name,
        "mode": mode,
        "sqnr_db": min(c["sqnr_db"] for c in pair.values()),
        "size_mb": r["sizes"]["tflite_bytes"] / 1e6,
        "convert_s": time.perf_counter() - t0,
        "transposes": r["lowering"].get("transpose_count"),
        "float_ops": len(r["lowering"].get("float_ops", [])),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--modes", default="fp32,fp16")
    p.add_argument("--models", default=",".join(models.names()))
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        warm, warm_in = models.get("digits_cnn")  # pay the imports before timing
        bridge.convert(warm, warm_in, Path(tmp) / "warmup")
        for name in args.models.split(","):
            for mode in args.modes.split(","):
                rows.append(row(name, mode, Path(tmp)))
                print(rows[-1], file=sys.stderr)
    header = [
        "model",
        "mode",
        "SQNR vs torch dB",
        "size MB",
        "convert s",
        "transposes",
        "float ops",
        "note",
    ]
    print_table(
        header,
        [
            [
                r["model"],
                r["mode"],
                r.get("sqnr_db", ""),
                r.get("size_mb", ""),
                r.get("convert_s", ""),
                r.get("transposes", ""),
                r.get("float_ops", ""),
                r.get("error", ""),
            ]
            for r in rows
        ],
    )
    print(f"\nwrote {write_json('zoo_report', rows)}")


if __name__ == "__main__":
    main()
