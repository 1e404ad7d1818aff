"""The rounding-noise model of a QDQ graph: what quantization costs when nothing clips.

Every activation QuantizeLinear → DequantizeLinear pair of the QDQ model becomes
``x + U(−s/2, s/2)`` (an ONNX RandomUniformLike with its own seed per tensor), where s is that
tensor's step. Weights keep their quantized values (their DequantizeLinear of an int8
initializer stays) and float-fallback ops stay float. A pair whose producer keeps its input's
scale (max-pool, reshape, concat, ... per `bridge.quantize.rules`) and reads values already on
that grid adds no rounding in the integer model, so it passes ``x`` through unchanged.

Rounding to the nearest step is, for values spread over many steps, an error uniform on
[−s/2, s/2] and independent of the value; its power is s²/12. The noisy model therefore predicts
the SQNR that rounding alone leaves at each output. What it leaves out are the failures the
parity gate exists to catch: ranges that clip the data (a calibration unlike the inputs), wrong
scales, wrong kernels. `tolerances.noise_floor_db` turns its prediction into a floor.

With ``clip=True`` each noisy tensor is first clipped to its quantized range, as the integer
model clips it: the prediction for data beyond the calibrated ranges (fresh inputs, not the
verification samples), where clipping is what the deployed model does by design.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from bridge.contract import IOContract
from bridge.quantize.rules import rule_for
from bridge.runtime.metrics import SQNR_EXACT_DB
from bridge.runtime.runners import OrtRunner
from bridge.runtime.tolerances import NOISE_DRAWS

#: Seed of the first noise source; the i-th quantized tensor draws with NOISE_SEED + i.
NOISE_SEED = 7919


def noise_model(
    qdq: onnx.ModelProto, *, seed: int = NOISE_SEED, clip: bool = False
) -> onnx.ModelProto:
    """A copy of `qdq` whose activation rounding is replaced by uniform noise of its own step
    (after clipping to its quantized range, with `clip`)."""
    graph = qdq.graph
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    outputs = {o.name for o in graph.output}
    grid = _activation_steps(graph.node, consts, readers, outputs)
    bounds = _bounds(graph.node, consts) if clip else {}
    dq_steps = {
        n.output[0]: grid[n.input[0]][1]
        for n in graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in grid
    }
    nodes: list[onnx.NodeProto] = []
    model_consts: list[onnx.TensorProto] = []
    for n in graph.node:
        if n.op_type == "QuantizeLinear" and n.output[0] in grid:
            continue
        if n.op_type == "DequantizeLinear" and n.input[0] in grid:
            x, step = grid[n.input[0]]
            if _on_grid(producer.get(x), step, dq_steps):
                nodes.append(helper.make_node("Identity", [x], [n.output[0]]))
            elif n.input[0] in bounds:
                clipped = f"{n.output[0]}__clipped"
                low, high = (
                    helper.make_tensor(f"{clipped}_{k}", onnx.TensorProto.FLOAT, [], [v])
                    for k, v in zip(("low", "high"), bounds[n.input[0]], strict=True)
                )
                model_consts.extend((low, high))
                nodes.append(helper.make_node("Clip", [x, low.name, high.name], [clipped]))
                nodes += _noise_nodes(clipped, n.output[0], step, seed + len(nodes))
            else:
                nodes += _noise_nodes(x, n.output[0], step, seed + len(nodes))
            continue
        nodes.append(n)
    model = onnx.ModelProto()
    model.CopyFrom(qdq)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {i for n in nodes for i in n.input} | {o.name for o in model.graph.output}
    kept = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend([*kept, *model_consts])
    return model


def predict(
    qdq: onnx.ModelProto,
    contract: IOContract,
    feeds: Sequence[Mapping[str, np.ndarray]],
    reference: Sequence[Mapping[str, np.ndarray]],
    *,
    clip: bool = False,
) -> dict[str, list[float]]:
    """{output: the SQNR to `reference` that rounding alone (with `clip`, rounding and the
    quantized ranges) predicts, per feed}.

    Each prediction averages the noise power of tolerances.NOISE_DRAWS draws.
    """
    runner = OrtRunner(noise_model(qdq, clip=clip), contract)
    predicted: dict[str, list[float]] = {k: [] for k in contract.output_names}
    for feed, ref in zip(feeds, reference, strict=True):
        draws = [runner.run(feed) for _ in range(NOISE_DRAWS)]
        for k in predicted:
            r = np.asarray(ref[k], np.float64)
            noise = np.mean([np.mean((r - np.asarray(d[k], np.float64)) ** 2) for d in draws])
            predicted[k].append(_db(float(np.mean(r**2)), float(noise)))
    return predicted


def _db(signal: float, noise: float) -> float:
    if noise == 0.0:
        return SQNR_EXACT_DB
    if signal == 0.0:
        return -SQNR_EXACT_DB
    return float(min(SQNR_EXACT_DB, 10.0 * np.log10(signal / noise)))


def _activation_steps(
    nodes: object,
    consts: Mapping[str, np.ndarray],
    readers: Mapping[str, list[onnx.NodeProto]],
    outputs: set[str],
) -> dict[str, tuple[str, float]]:
    """{quantized tensor: (its float input, its step)} for every activation Q → DQ pair."""
    grid = {}
    for n in nodes:  # type: ignore[attr-defined]
        if n.op_type != "QuantizeLinear" or n.input[0] in consts or len(n.input) < 2:
            continue
        scale = consts.get(n.input[1])
        users = readers.get(n.output[0], [])
        if scale is None or scale.size != 1 or n.output[0] in outputs or not users:
            continue
        if all(u.op_type == "DequantizeLinear" for u in users):
            grid[n.output[0]] = (n.input[0], float(scale.ravel()[0]))
    return grid


def _bounds(nodes: object, consts: Mapping[str, np.ndarray]) -> dict[str, tuple[float, float]]:
    """{quantized tensor: (lowest, highest) float value its QuantizeLinear can represent}."""
    bounds = {}
    for n in nodes:  # type: ignore[attr-defined]
        if n.op_type != "QuantizeLinear" or len(n.input) < 3 or n.input[2] not in consts:
            continue
        scale, zero = consts.get(n.input[1]), consts[n.input[2]]
        if scale is None or scale.size != 1 or zero.size != 1:
            continue
        info = np.iinfo(zero.dtype)
        z, s = float(zero.ravel()[0]), float(scale.ravel()[0])
        bounds[n.output[0]] = ((info.min - z) * s, (info.max - z) * s)
    return bounds


def _on_grid(node: onnx.NodeProto | None, step: float, dq_steps: Mapping[str, float]) -> bool:
    """True when `node` keeps its input's scale and reads only values already on `step`'s grid."""
    rule = rule_for(node.op_type, node) if node is not None else None
    if node is None or rule is None or rule.output != "same":
        return False
    data = [node.input[i] for i in rule.data_inputs(node)]
    return {dq_steps.get(t) for t in data} == {step}


def _noise_nodes(x: str, out: str, step: float, seed: int) -> list[onnx.NodeProto]:
    noise = f"{out}__rounding_noise"
    return [
        helper.make_node(
            "RandomUniformLike",
            [x],
            [noise],
            low=-step / 2,
            high=step / 2,
            seed=float(seed),
        ),
        helper.make_node("Add", [x, noise], [out]),
    ]
