"""Float benchmark: bridge fp32/fp16 against onnx2tf 2.6.9's direct float32/float16 files.

For each zoo model: size, median LiteRT latency at 1 and 2 threads, SQNR vs torch, conversion
time, and the ratio bridge/anchor. Prints a table and writes tools/results/bench_float.json.

    python tools/bench_float.py [--models mobilenet_v2,resnet18] [--runs 50]
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
from bridge.contract import IOContract
from bridge.runtime.feeds import random_feeds
from bridge.runtime.metrics import sqnr_db
from bridge.runtime.runners import TorchRunner
from tools._anchors import onnx2tf_direct
from tools._bench import latency_ms, print_rows, print_table, run_foreign, write_json

DEFAULT_MODELS = "mobilenet_v2,resnet18,efficientnet_lite0,mobilenet_v3_small"


def measure(tflite: bytes | Path, contract, feeds, reference, runs: int) -> dict:
    """Size, latency, SQNR vs torch (and top-1 agreement for class scores) of one .tflite, or
    the error that stopped it."""
    data = tflite if isinstance(tflite, bytes) else tflite.read_bytes()
    row: dict = {"size_mb": len(data) / 1e6}
    try:
        out = run_foreign(data, contract, feeds)
        row["sqnr_db"] = min(sqnr_db(reference[k], out[k]) for k in reference)
        scores = [k for k in reference if reference[k].ndim == 2 and reference[k].shape[1] > 1]
        if scores:
            ref, got = reference[scores[0]], out[scores[0]]
            row["top1_agree"] = float(np.mean(ref.argmax(1) == got.argmax(1)))
        row["latency_ms_1t"] = latency_ms(data, threads=1, runs=runs)
        row["latency_ms_2t"] = latency_ms(data, threads=2, runs=runs)
    except Exception as e:  # an anchor that does not run is a result, not a crash
        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
    return row


def bench(name: str, runs: int, work: Path) -> list[dict]:
    model, inputs = models.get(name)
    rows = []
    results = {}
    for mode in ("fp32", "fp16"):
        t0 = time.perf_counter()
        conv = bridge.convert(
            model,
            inputs,
            work / name / mode,
            quantize=mode,
            overwrite=True,
            **models.convert_options(name),
        )
        results[mode] = (conv, time.perf_counter() - t0)
    contract = IOContract.from_dict(results["fp32"][0].report["contract"])
    feeds = [random_feeds(contract, seed=s) for s in range(3)]
    torch_runner = TorchRunner(model, contract)
    per = [torch_runner.run(f) for f in feeds]
    reference = {k: np.concatenate([p[k] for p in per]) for k in per[0]}
    anchor, anchor_s = onnx2tf_direct(work / name / "fp32" / "model.opt.onnx")
    for mode in ("fp32", "fp16"):
        conv, secs = results[mode]
        ours = measure(conv.tflite_path, contract, feeds, reference, runs)
        ours.update(tool="bridge", convert_s=secs)
        theirs = {"tool": "onnx2tf-direct", "convert_s": anchor_s}
        blob = anchor[mode]
        theirs.update(
            measure(blob, contract, feeds, reference, runs)
            if isinstance(blob, bytes)
            else {"error": blob}
        )
        for r in (ours, theirs):
            r.update(model=name, mode=mode)
        rows += [ours, theirs]
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=DEFAULT_MODELS)
    p.add_argument("--runs", type=int, default=50)
    args = p.parse_args()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        # Warm up imports (torch.onnx, onnx2tf, LiteRT) so no tool pays them in its timing.
        warm, warm_in = models.get("digits_cnn")
        bridge.convert(warm, warm_in, Path(tmp) / "warmup")
        onnx2tf_direct(Path(tmp) / "warmup" / "model.opt.onnx")
        for name in args.models.split(","):
            rows += bench(name, args.runs, Path(tmp))
    print_rows(rows, ["model", "mode", "tool"])
    ratios = []
    for ours, theirs in zip(rows[::2], rows[1::2], strict=True):
        if "error" in theirs or "error" in ours:
            continue
        ratios.append(
            {
                "model": ours["model"],
                "mode": ours["mode"],
                "size": ours["size_mb"] / theirs["size_mb"],
                "latency_1t": ours["latency_ms_1t"] / theirs["latency_ms_1t"],
                "convert_time": ours["convert_s"] / theirs["convert_s"],
                "sqnr_delta_db": ours["sqnr_db"] - theirs["sqnr_db"],
            }
        )
    if ratios:
        print("\nbridge / anchor ratios")
        print_table(list(ratios[0]), [list(r.values()) for r in ratios])
    print(f"\nwrote {write_json('bench_float', {'rows': rows, 'ratios': ratios})}")


if __name__ == "__main__":
    main()
