"""Where an int8 model's output error comes from: weights, activations, and which tensors.

Reads a conversion folder's `model.qdq.onnx` and `model.opt.onnx` and runs variants of the QDQ
model in ONNX Runtime against the float model on seeded random inputs:

- the full QDQ model; weights only (every activation QuantizeLinear/DequantizeLinear pair
  bypassed); activations only (every weight replaced by its float value);
- each activation alone (only its pair kept, float weights), as a share of the summed single
  noise powers;
- each weight alone (only it quantized, float activations), likewise; biases are left out of
  this list, since a corrected bias differs from the float one on purpose.

Noise powers are relative to the float output's power (SQNR = −10·log10). Single-tensor shares
show where to look; they add up only roughly, since the model is not linear.

The folder must be converted with `--no-equalize` (equalized weights are not model.opt.onnx's).

    python tools/noise_budget.py out/mnv2-int8 [--samples 16] [--top 12]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from bridge.contract import IOContract
from bridge.runtime.feeds import random_feeds
from tools._bench import print_table, write_json


def pairs(model: onnx.ModelProto) -> tuple[dict[str, list[int]], dict[str, int]]:
    """Activation Q→DQ pairs (quantized tensor → node indices) and weight DQs (initializer →
    node index). Pairs that make a graph output are left out: the output grid stays."""
    nodes = list(model.graph.node)
    inits = {t.name for t in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    readers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for t in n.input:
            readers.setdefault(t, []).append(i)
    acts: dict[str, list[int]] = {}
    weights: dict[str, int] = {}
    for i, n in enumerate(nodes):
        if n.op_type == "DequantizeLinear" and n.input[0] in inits:
            weights[n.input[0]] = i
        if n.op_type != "QuantizeLinear" or n.input[0] in inits:
            continue
        dqs = [j for j in readers.get(n.output[0], []) if nodes[j].op_type == "DequantizeLinear"]
        if dqs and not any(nodes[j].output[0] in outputs for j in dqs):
            acts[n.input[0]] = [i, *dqs]
    return acts, weights


def variant(
    model: onnx.ModelProto,
    float_values: dict[str, np.ndarray],
    keep_acts: Iterable[str],
    keep_weights: Iterable[str],
) -> onnx.ModelProto:
    """`model` with only `keep_acts` activation pairs and `keep_weights` weights quantized."""
    acts, weights = pairs(model)
    keep_a, keep_w = set(keep_acts), set(keep_weights)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = list(out.graph.node)
    rename: dict[str, str] = {}
    drop: set[int] = set()
    for tensor, idx in acts.items():
        if tensor not in keep_a:
            drop.update(idx)
            for j in idx[1:]:
                rename[nodes[j].output[0]] = tensor
    for name, j in weights.items():
        if name not in keep_w and name in float_values:
            drop.add(j)
            constant = nodes[j].output[0] + "_float"
            out.graph.initializer.append(numpy_helper.from_array(float_values[name], constant))
            rename[nodes[j].output[0]] = constant
    kept = []
    for i, n in enumerate(nodes):
        if i in drop:
            continue
        c = onnx.NodeProto()
        c.CopyFrom(n)
        for k, t in enumerate(c.input):
            c.input[k] = rename.get(t, t)
        kept.append(c)
    del out.graph.node[:]
    out.graph.node.extend(kept)
    return out


def float_weights(qdq: onnx.ModelProto, opt: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Each quantized weight's float value, from the optimised float model (by name)."""
    floats = {t.name: numpy_helper.to_array(t) for t in opt.graph.initializer}
    _, weights = pairs(qdq)
    found = {}
    for name in weights:
        base = name.removesuffix("_quantized")
        if base in floats:
            found[name] = floats[base].astype(np.float32)
    return found


def noise(model: onnx.ModelProto, feeds: Sequence[dict], reference: np.ndarray) -> float:
    """Output noise power of `model` relative to `reference`'s power (first output)."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = np.concatenate([session.run(None, f)[0] for f in feeds])
    return float(((got - reference) ** 2).sum() / (reference**2).sum())


def db(power: float) -> float:
    return float(-10 * np.log10(max(power, 1e-30)))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path, help="a bridge int8/int16x8 conversion folder")
    p.add_argument("--samples", type=int, default=16, help="seeded random input samples")
    p.add_argument("--top", type=int, default=12, help="tensors listed per kind")
    args = p.parse_args(argv)

    qdq = onnx.load(str(args.folder / "model.qdq.onnx"))
    opt = onnx.load(str(args.folder / "model.opt.onnx"))
    report = json.loads((args.folder / "report.json").read_text())
    if report.get("quantization", {}).get("equalization"):
        p.error(
            f"{args.folder} was converted with cross-layer equalization, so its weights are not "
            "model.opt.onnx's; convert again with --no-equalize to budget it"
        )
    contract = IOContract.from_dict(report["contract"])
    feeds = [random_feeds(contract, seed=s) for s in range(args.samples)]
    ref_session = ort.InferenceSession(opt.SerializeToString(), providers=["CPUExecutionProvider"])
    reference = np.concatenate([ref_session.run(None, f)[0] for f in feeds])
    floats = float_weights(qdq, opt)
    acts, weights = pairs(qdq)
    quantized = [w for w in weights if w in floats]
    matrices = [w for w in quantized if floats[w].ndim > 1]

    summary = {
        "full": noise(qdq, feeds, reference),
        "weights_only": noise(variant(qdq, floats, [], quantized), feeds, reference),
        "activations_only": noise(variant(qdq, floats, acts, []), feeds, reference),
    }
    base = noise(variant(qdq, floats, [], []), feeds, reference)  # output grid alone
    singles = {
        "activation": {
            t: noise(variant(qdq, floats, [t], []), feeds, reference) - base for t in acts
        },
        "weight": {
            w: noise(variant(qdq, floats, [], [w]), feeds, reference) - base for w in matrices
        },
    }
    print(f"{args.folder}: {args.samples} samples; SQNR vs the float model")
    print_table(["variant", "SQNR dB"], [[k, round(db(v), 2)] for k, v in summary.items()])
    tables = {}
    for kind, powers in singles.items():
        total = sum(max(v, 0.0) for v in powers.values()) or 1.0
        rows = sorted(powers.items(), key=lambda kv: -kv[1])[: args.top]
        tables[kind] = [
            {"tensor": t, "share": max(v, 0.0) / total, "alone_db": db(v + base)} for t, v in rows
        ]
        print(f"\n{kind}s, each quantized alone (share of the summed single noise powers)")
        print_table(
            [kind, "share %", "SQNR dB alone"],
            [
                [r["tensor"][:70], round(100 * r["share"], 1), round(r["alone_db"], 2)]
                for r in tables[kind]
            ],
        )
    path = write_json(
        "noise_budget",
        {
            "folder": str(args.folder),
            "samples": args.samples,
            "sqnr_db": {k: db(v) for k, v in summary.items()},
            "output_grid_only_db": db(base),
            "tensors": tables,
        },
    )
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
