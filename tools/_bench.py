"""Shared benchmark helpers: LiteRT latency, running any .tflite against our I/O contract, and
JSON/table output. Used by the tools/bench_*.py scripts; not part of the bridge package."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bridge.contract import IOContract
from bridge.verify.tables import table

RESULTS = Path(__file__).parent / "results"


def latency_ms(tflite: Path | bytes, *, threads: int, runs: int = 50, warmup: int = 5) -> float:
    """Median wall time of one invoke() in ms on random inputs (after `warmup` invokes)."""
    from ai_edge_litert.interpreter import Interpreter

    kwargs = {"model_content": tflite} if isinstance(tflite, bytes) else {"model_path": str(tflite)}
    interp = Interpreter(num_threads=threads, **kwargs)
    interp.allocate_tensors()
    rng = np.random.default_rng(0)
    for d in interp.get_input_details():
        if np.dtype(d["dtype"]).kind == "f":
            x = rng.standard_normal(d["shape"]).astype(d["dtype"])
        else:
            x = rng.integers(-10, 10, d["shape"]).astype(d["dtype"])
        interp.set_tensor(d["index"], x)
    for _ in range(warmup):
        interp.invoke()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        interp.invoke()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(statistics.median(times))


def run_foreign(
    tflite: Path | bytes, contract: IOContract, feeds: Sequence[Mapping[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Run a .tflite not made by bridge (an anchor), matching I/O by position and undoing NHWC.

    Inputs whose shape is the NHWC form of the contract's NCHW shape are transposed; integer
    I/O is (de)quantized with the tensor's own parameters.
    """
    from ai_edge_litert.interpreter import Interpreter

    kwargs = {"model_content": tflite} if isinstance(tflite, bytes) else {"model_path": str(tflite)}
    interp = Interpreter(num_threads=1, **kwargs)
    interp.allocate_tensors()
    ins, outs = interp.get_input_details(), interp.get_output_details()
    ins = _match(ins, contract.inputs)
    outs = _match(outs, contract.outputs)
    results: dict[str, list[np.ndarray]] = {s.name: [] for s in contract.outputs}
    for feed in feeds:
        for spec, d in zip(contract.inputs, ins, strict=True):
            x = np.asarray(feed[spec.name])
            if tuple(d["shape"]) != x.shape and x.ndim == 4:
                x = np.moveaxis(x, 1, -1)
            if np.dtype(d["dtype"]).kind in "iu":
                s, z = d["quantization"]
                info = np.iinfo(d["dtype"])
                x = np.clip(np.round(x / s) + z, info.min, info.max)
            interp.set_tensor(d["index"], x.astype(d["dtype"]))
        interp.invoke()
        for spec, d in zip(contract.outputs, outs, strict=True):
            y = interp.get_tensor(d["index"])
            if np.dtype(d["dtype"]).kind in "iu":
                s, z = d["quantization"]
                y = (y.astype(np.float32) - z) * s
            if y.shape != spec.concrete_shape() and y.ndim == 4:
                y = np.moveaxis(y, -1, 1)
            results[spec.name].append(y)
    return {k: np.concatenate(v) for k, v in results.items()}


def _match(details: list[dict], specs: Sequence) -> list[dict]:
    by_name = {d["name"]: d for d in details}
    if all(s.name in by_name for s in specs):
        return [by_name[s.name] for s in specs]
    # signature names can be mangled by TF; fall back to element count, then position.
    left = list(details)
    ordered = []
    for s in specs:
        n = int(np.prod(s.concrete_shape()))
        hit = next((d for d in left if int(np.prod(d["shape"])) == n), left[0])
        left.remove(hit)
        ordered.append(hit)
    return ordered


def write_json(name: str, payload: Any) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=1))
    return path


#: The columns every benchmark row carries after its identifying ones: (header, row key).
MEASURES = [
    ("size MB", "size_mb"),
    ("ms 1t", "latency_ms_1t"),
    ("ms 2t", "latency_ms_2t"),
    ("SQNR dB", "sqnr_db"),
    ("convert s", "convert_s"),
    ("note", "error"),
]


def print_rows(rows: list[dict], keys: list[str]) -> None:
    """Print benchmark rows: the identifying `keys`, then the MEASURES columns."""
    columns = [(k, k) for k in keys] + MEASURES
    print_table([h for h, _ in columns], [[r.get(k, "") for _, k in columns] for r in rows])


def print_table(header: list[str], rows: list[list[Any]]) -> None:
    print(table(header, [[_fmt(x) for x in r] for r in rows]))


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"
    return str(x)
