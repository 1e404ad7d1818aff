"""int8 benchmark: bridge's int8 (our calibrated scales) against onnx2tf's own per-channel int8
(`-oiqt -qt per-channel`, tf_converter backend), calibrated on the same arrays, in one process.

Per model: size, median LiteRT latency at 1 and 2 threads, SQNR and top-1 agreement vs torch on
held-out inputs, conversion time, and bridge/anchor ratios against the targets (size ≤ 1.0×,
latency ≤ 0.95×, SQNR ≥ anchor + 3 dB, conversion time ≤ 0.25×). Writes
tools/results/bench_quant.json.

Models: the zoo's random-weight CNNs on seeded normal inputs (`--calib` calibration and
`--eval` held-out samples; on random weights the error is correlated across one sample's 1000
logits, so few samples leave the dB figure uncertain by ±0.5), and `efficientnet_lite0_real`,
the trained ImageNet EfficientNet-Lite0 (`bash ci/assets.sh`), calibrated on 64 crops of 20
photos and evaluated on 90 crops of 9 other photos.

The anchor converts bridge's optimised float ONNX (`model.opt.onnx`: frozen, BatchNorm folded,
TF-style padding merged), because it cannot convert EfficientNet-Lite0's raw export ("Dimensions
must be equal, but are 5 and 7"); that helps the anchor, never bridge. Latency is measured for
both files in alternation (`paired_latency_ms`), 4·`--runs` invokes each. Like for like: bridge
takes its image inputs NHWC here (`nhwc_inputs=True`), as the anchor's file does, so neither pays
an input TRANSPOSE the other lacks.

    python tools/bench_quant.py [--models mobilenet_v2] [--observer histogram] [--calib 32]
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
from bridge.runtime.runners import TorchRunner
from tools._anchors import onnx2tf_int8
from tools._bench import print_rows, print_table, write_json
from tools.bench_float import measure

DEFAULT_MODELS = "mobilenet_v2,resnet18,efficientnet_lite0,efficientnet_lite0_real"
REAL = "efficientnet_lite0_real"
TARGETS = {"size": 1.0, "latency_1t": 0.95, "sqnr_gain_db": 3.0, "convert_time": 0.25}


def bench(name: str, args: argparse.Namespace, work: Path) -> list[dict]:
    model, inputs, opts, arrays = _data(name)
    probe = bridge.convert(model, inputs, work / name / "fp32", overwrite=True, **opts)
    contract = IOContract.from_dict(probe.report["contract"])
    names = contract.input_names
    if arrays is None:  # seeded, disjoint calibration and evaluation samples
        arrays = tuple(
            [tuple(random_feeds(contract, seed=s)[n] for n in names) for s in seeds]
            for seeds in (range(1000, 1000 + args.calib), range(args.eval))
        )
    calib_arrays, eval_arrays = arrays
    calib = [dict(zip(names, c, strict=True)) for c in calib_arrays]
    feeds = [dict(zip(names, e, strict=True)) for e in eval_arrays]
    runner = TorchRunner(model, contract)
    per = [runner.run(f) for f in feeds]
    reference = {k: np.concatenate([p[k] for p in per]) for k in per[0]}

    t0 = time.perf_counter()
    ours = bridge.convert(
        model,
        inputs,
        work / name / "int8",
        quantize="int8",
        calibration=calib_arrays,
        observer=args.observer,
        weight_rounding=args.weight_rounding,
        nhwc_inputs=args.nhwc,
        overwrite=True,
        **opts,
    )
    ours_s = time.perf_counter() - t0
    row = measure(ours.tflite_path, contract, feeds, reference, args.runs)
    row.update(
        model=name, tool=f"bridge ({args.observer}, {args.weight_rounding})", convert_s=ours_s
    )

    anchor, anchor_s = onnx2tf_int8(work / name / "fp32" / "model.opt.onnx", contract, calib)
    blob = anchor["int8"]
    theirs = {"model": name, "tool": "onnx2tf tf_converter", "convert_s": anchor_s}
    theirs.update(
        measure(blob, contract, feeds, reference, args.runs)
        if isinstance(blob, bytes)
        else {"error": blob}
    )
    if isinstance(blob, bytes) and "error" not in row and "error" not in theirs:
        for threads in (1, 2):
            pair = paired_latency_ms(ours.tflite_path.read_bytes(), blob, threads, args.runs)
            row[f"latency_ms_{threads}t"], theirs[f"latency_ms_{threads}t"] = pair
    return [row, theirs]


def _data(name: str) -> tuple:
    """(model, example inputs, convert options, (calibration, evaluation) arrays or None).

    None: the zoo's random-weight model, fed seeded normal samples built from its contract."""
    if name != REAL:
        return *models.get(name), models.convert_options(name), None
    from models.real.efficientnet import efficientnet_lite0_real

    real = efficientnet_lite0_real(calib_samples=64)
    cal, ev = real.dataset.calibration[0], real.dataset.evaluation[0]
    opts = {"model_name": "efficientnet_lite0"}  # its per-model floor (tolerances.py)
    return (
        real.model,
        real.example_inputs,
        opts,
        ([(x[None],) for x in cal], [(x[None],) for x in ev]),
    )


def paired_latency_ms(a: bytes, b: bytes, threads: int, runs: int) -> tuple[float, float]:
    """Median invoke() time of two models measured in alternation (one invoke of each in turn),
    so that a busy machine slows both alike instead of whichever happened to run second."""
    from ai_edge_litert.interpreter import Interpreter

    interps = []
    for data in (a, b):
        it = Interpreter(model_content=data, num_threads=threads)
        it.allocate_tensors()
        rng = np.random.default_rng(0)
        for d in it.get_input_details():
            kind = np.dtype(d["dtype"]).kind
            x = (
                rng.standard_normal(d["shape"])
                if kind == "f"
                else rng.integers(-10, 10, d["shape"])
            )
            it.set_tensor(d["index"], x.astype(d["dtype"]))
        for _ in range(5):
            it.invoke()
        interps.append(it)
    times: list[list[float]] = [[], []]
    for _ in range(4 * runs):
        for k, it in enumerate(interps):
            t0 = time.perf_counter()
            it.invoke()
            times[k].append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times[0])), float(np.median(times[1]))


def ratios(ours: dict, theirs: dict) -> dict:
    r = {
        "model": ours["model"],
        "size": ours["size_mb"] / theirs["size_mb"],
        "latency_1t": ours["latency_ms_1t"] / theirs["latency_ms_1t"],
        "latency_2t": ours["latency_ms_2t"] / theirs["latency_ms_2t"],
        "sqnr_gain_db": ours["sqnr_db"] - theirs["sqnr_db"],
        "convert_time": ours["convert_s"] / theirs["convert_s"],
    }
    r["targets_met"] = bool(
        r["size"] <= TARGETS["size"]
        and r["latency_1t"] <= TARGETS["latency_1t"]
        and r["sqnr_gain_db"] >= TARGETS["sqnr_gain_db"]
        and r["convert_time"] <= TARGETS["convert_time"]
    )
    return r


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=DEFAULT_MODELS)
    p.add_argument("--observer", default="histogram")
    p.add_argument("--weight-rounding", default="gptq", choices=["nearest", "gptq"])
    p.add_argument("--calib", type=int, default=32, help="calibration samples")
    p.add_argument("--eval", type=int, default=32, help="held-out evaluation samples")
    p.add_argument(
        "--nchw", dest="nhwc", action="store_false", help="keep bridge's image inputs NCHW"
    )
    p.add_argument("--runs", type=int, default=50, help="timed invokes per latency")
    args = p.parse_args()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            rows += bench(name, args, Path(tmp))
    print_rows(rows, ["model", "tool"])
    rat = [
        ratios(o, t)
        for o, t in zip(rows[::2], rows[1::2], strict=True)
        if "error" not in o and "error" not in t
    ]
    if rat:
        print(f"\nbridge / anchor ratios (targets: {TARGETS})")
        print_table(list(rat[0]), [list(r.values()) for r in rat])
    path = write_json(
        "bench_quant",
        {
            "observer": args.observer,
            "weight_rounding": args.weight_rounding,
            "nhwc_inputs": args.nhwc,
            "calibration": args.calib,
            "evaluation": args.eval,
            "rows": rows,
            "ratios": rat,
            "targets": TARGETS,
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
