"""Cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization", §4.1), generalised to
residual streams and sized for per-channel weights and per-tensor activations.

A positive per-channel factor passes exactly through ReLU (relu(x/t) = relu(x)/t for t > 0),
max- and average-pooling, zero padding and an Add whose inputs all carry the same factors. So a
*channel group* — tensors joined by such ops, every one made by a Conv/Gemm (or by those ops)
and read only by Conv/Gemm (or those ops) — can be rescaled channel by channel: each producer's
output channel c is divided by t_c (its weight row and bias), each reader's input channel c is
multiplied by t_c (its weight column). The float model computes the same function; only how
the quantization grids fit it changes. A group touching anything else (Clip/ReLU6, Concat,
Mul, a graph input or output, a shared weight) is left alone, since the factor would not pass.

What to equalize: with per-channel weights, a producer's rows are quantized each at its own
scale, so dividing a row by t_c changes nothing there. What changes is (a) each per-tensor
activation grid of the group, whose step is set by the widest channel, and (b) each reader's
weight row, whose step is set by its largest column. With a_c the channel's activation range
and r_c the largest weight of column c relative to its row's largest (over all readers):

    t_c = sqrt(a_c / r_c)   (then divided by their geometric mean)

makes a_c/t_c = r_c·t_c: a narrow channel is scaled up to use more of the activation grid, as
far as its readers' columns allow. With depthwise readers only (their rows are per channel,
unaffected), r_c is taken as 1 and the activation ranges are equalised fully.

`MAX_FACTOR` bounds each t_c (and 1/t_c) so that no weight or bias leaves float32's range.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from bridge.artifact import OnnxArtifact
from bridge.runtime.runners import OrtRunner

log = logging.getLogger(__name__)

#: Ops a per-channel positive factor passes through, input → output.
PASS_THROUGH = ("Relu", "LeakyRelu", "MaxPool", "AveragePool", "GlobalAveragePool", "Identity")
#: Largest factor (and inverse) applied to one channel.
MAX_FACTOR = 1e3
#: The channel axis of every equalized tensor (the float ONNX model is channel-first). The
#: factors recorded in facts["quantization"]["equalization"] run along it; per-layer
#: comparisons undo them there (`bridge.verify.unscale`).
CHANNEL_AXIS = 1


@dataclass
class ChannelGroup:
    """Tensors that share one per-channel factor, with the nodes that absorb it.

    Attributes:
        tensors: the group's tensors (channel axis `CHANNEL_AXIS`).
        producers: indices of the Conv/Gemm nodes that write a group tensor.
        readers: indices of the Conv/Gemm nodes that read a group tensor as their input 0.
    """

    tensors: list[str] = field(default_factory=list)
    producers: list[int] = field(default_factory=list)
    readers: list[int] = field(default_factory=list)


def channel_groups(model: onnx.ModelProto) -> list[ChannelGroup]:
    """The groups of `model` that can be rescaled exactly (see the module docstring)."""
    graph = model.graph
    nodes = list(graph.node)
    inits = {t.name: t for t in graph.initializer}
    uses: dict[str, int] = defaultdict(int)
    consumers: dict[str, list[int]] = defaultdict(list)
    for i, n in enumerate(nodes):
        for t in n.input:
            if t:
                uses[t] += 1
                consumers[t].append(i)
    producer = {t: i for i, n in enumerate(nodes) for t in n.output if t}
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for n in nodes:
        if _passes(n, inits):
            for t in [n.input[0], n.output[0]]:
                find(t)
            parent[find(n.input[0])] = find(n.output[0])
        elif n.op_type == "Add" and len(n.input) == 2 and not any(t in inits for t in n.input):
            for t in [*n.input, n.output[0]]:
                parent[find(t)] = find(n.output[0])
    members: dict[str, list[str]] = defaultdict(list)
    for t in list(parent):
        members[find(t)].append(t)
    for n in nodes:  # a weighted layer's output alone is a group too
        if _weighted(n, inits, uses) and n.output[0] not in parent:
            members[n.output[0]].append(n.output[0])

    boundary = {i.name for i in graph.input} | {o.name for o in graph.output}
    groups = []
    for tensors in members.values():
        group = _check(tensors, nodes, inits, uses, consumers, producer, boundary)
        if group is not None:
            groups.append(group)
    return groups


def _passes(node: onnx.NodeProto, inits: Mapping[str, onnx.TensorProto]) -> bool:
    """A single-data-input op a positive per-channel factor passes through exactly."""
    if node.op_type in PASS_THROUGH:
        return len(node.output) == 1
    if node.op_type == "Pad":  # zero padding, none along the channel axis
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("mode", b"constant") not in (b"constant", "constant") or len(node.input) > 3:
            return False
        pads = inits.get(node.input[1]) if len(node.input) > 1 else None
        if pads is None:
            return False
        p = numpy_helper.to_array(pads).reshape(2, -1)
        if p.shape[1] < 2 or np.any(p[:, 1]):
            return False
        if len(node.input) > 2 and node.input[2]:
            value = inits.get(node.input[2])
            return value is not None and not np.any(numpy_helper.to_array(value))
        return True
    return False


def _weighted(
    node: onnx.NodeProto, inits: Mapping[str, onnx.TensorProto], uses: Mapping[str, int]
) -> bool:
    """A Conv or Gemm whose weight (and bias) are initializers read by it alone."""
    if node.op_type not in ("Conv", "Gemm") or len(node.input) < 2:
        return False
    consts = [t for t in node.input[1:] if t]
    if not all(t in inits and uses[t] == 1 for t in consts):
        return False
    if node.op_type == "Gemm":
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        return not attrs.get("transA", 0)
    return len(inits[node.input[1]].dims) >= 3


def _check(
    tensors: Sequence[str],
    nodes: Sequence[onnx.NodeProto],
    inits: Mapping[str, onnx.TensorProto],
    uses: Mapping[str, int],
    consumers: Mapping[str, list[int]],
    producer: Mapping[str, int],
    boundary: set[str],
) -> ChannelGroup | None:
    group = ChannelGroup(tensors=sorted(tensors))
    members = set(tensors)
    for t in tensors:
        if t in boundary or t in inits or t not in producer:
            return None
        p = nodes[producer[t]]
        if _weighted(p, inits, uses):
            group.producers.append(producer[t])
        elif not (_passes(p, inits) or p.op_type == "Add") or not all(
            x in members for x in p.input[:2] if x and x not in inits
        ):
            return None
        for c in consumers.get(t, []):
            n = nodes[c]
            if _passes(n, inits) or n.op_type == "Add":
                if n.output[0] not in members:
                    return None
            elif _weighted(n, inits, uses) and n.input[0] == t and t not in n.input[1:]:
                group.readers.append(c)
            else:
                return None
    if not group.producers or not group.readers:
        return None
    group.producers = sorted(set(group.producers))
    group.readers = sorted(set(group.readers))
    return group


def channel_factors(
    model: onnx.ModelProto, group: ChannelGroup, ranges: np.ndarray
) -> np.ndarray | None:
    """t_c for `group` from its per-channel activation ranges (None if shapes disagree)."""
    inits = {t.name: t for t in model.graph.initializer}
    nodes = model.graph.node
    a = np.asarray(ranges, np.float64)
    rel = np.zeros_like(a)
    dense = False
    for i in group.readers:
        cols = _reader_columns(nodes[i], numpy_helper.to_array(inits[nodes[i].input[1]]))
        if cols is None or cols.shape[1] != a.size:
            return None
        if cols.shape[0] > 0:
            dense = True
            row_max = np.abs(cols).max(axis=1, keepdims=True)
            rel = np.maximum(rel, (np.abs(cols) / np.maximum(row_max, 1e-30)).max(axis=0))
    good = a > 0
    if not np.any(good):
        return None
    if dense:
        good &= rel > 0
        t = np.ones_like(a)
        t[good] = np.sqrt(a[good] / rel[good])
    else:
        t = np.where(good, a, 1.0)
    t[good] /= np.exp(np.mean(np.log(t[good])))
    t[~good] = 1.0
    return np.clip(t, 1.0 / MAX_FACTOR, MAX_FACTOR)


def _reader_columns(node: onnx.NodeProto, w: np.ndarray) -> np.ndarray | None:
    """The reader's weight as (rows, input channels) over its dense rows; depthwise readers
    (one input channel per group) give zero rows, since their rows are per channel."""
    if node.op_type == "Gemm":
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        return w if attrs.get("transB", 0) else w.T
    groups = _conv_groups(node)
    c_out, c_in_g = w.shape[0], w.shape[1]
    if groups == 1:
        return w.reshape(c_out, c_in_g, -1).transpose(0, 2, 1).reshape(-1, c_in_g)
    if c_in_g == 1:
        return np.zeros((0, groups))
    return None


def _conv_groups(node: onnx.NodeProto) -> int:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return int(attrs.get("group", 1))


def apply_factors(
    model: onnx.ModelProto, group: ChannelGroup, t: np.ndarray, new: dict[str, np.ndarray]
) -> None:
    """Rescale the group's weights and biases so that x_c ← x_c/t_c, into `new` (initializer
    name → float64 array; entries already there, from other groups, are rescaled further)."""
    inits = {x.name: x for x in model.graph.initializer}
    nodes = model.graph.node

    def value(name: str) -> np.ndarray:
        return new[name] if name in new else numpy_helper.to_array(inits[name]).astype(np.float64)

    for i in group.producers:
        n = nodes[i]
        w = value(n.input[1])
        if n.op_type == "Gemm":
            attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
            w = w / (t[:, None] if attrs.get("transB", 0) else t[None, :])
        else:
            w = w / t.reshape(-1, *([1] * (w.ndim - 1)))
        new[n.input[1]] = w
        if len(n.input) > 2 and n.input[2]:
            new[n.input[2]] = value(n.input[2]) / t
    for i in group.readers:
        n = nodes[i]
        w = value(n.input[1])
        if n.op_type == "Gemm":
            attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
            w = w * (t[None, :] if attrs.get("transB", 0) else t[:, None])
        elif _conv_groups(n) == 1:
            w = w * t.reshape(1, -1, *([1] * (w.ndim - 2)))
        else:  # depthwise: output channel o reads input channel o // multiplier
            w = w * np.repeat(t, w.shape[0] // t.size).reshape(-1, *([1] * (w.ndim - 1)))
        new[n.input[1]] = w


def equalize_artifact(
    artifact: OnnxArtifact, samples: Sequence[Mapping[str, np.ndarray]]
) -> tuple[OnnxArtifact, dict[str, list[float]]]:
    """`artifact` with its channel groups equalized, ranges measured on `samples`.

    Returns:
        (the equalized artifact, tensor name → its factors t_c: the equalized model holds
        x_c / t_c where the original holds x_c, along `CHANNEL_AXIS`). Both unchanged without
        groups.
    """
    groups = channel_groups(artifact.model)
    if not groups or not samples:
        return artifact, {}
    ranges = channel_ranges(artifact, samples, [t for g in groups for t in g.tensors])
    model, factors = equalize(artifact.model, ranges, groups)
    log.info("equalized %d channel groups (%d tensors)", len(groups), len(factors))
    return artifact.evolve(model=model), factors


def channel_ranges(
    artifact: OnnxArtifact, samples: Sequence[Mapping[str, np.ndarray]], tensors: Sequence[str]
) -> dict[str, np.ndarray]:
    """Per-channel (`CHANNEL_AXIS`) width max(x, 0) − min(x, 0) of `tensors` over `samples`."""
    runner = OrtRunner(artifact.model, artifact.contract, extra_outputs=list(tensors))
    lo: dict[str, np.ndarray] = {}
    hi: dict[str, np.ndarray] = {}
    for feeds in samples:
        values = runner.run(feeds)
        for t in tensors:
            x = np.asarray(values[t])
            if x.ndim <= CHANNEL_AXIS:
                continue
            axes = tuple(i for i in range(x.ndim) if i != CHANNEL_AXIS)
            lo[t] = np.minimum(lo.get(t, 0.0), x.min(axis=axes))
            hi[t] = np.maximum(hi.get(t, 0.0), x.max(axis=axes))
    return {t: (hi[t] - lo[t]).astype(np.float64) for t in lo}


def equalize(
    model: onnx.ModelProto,
    ranges: Mapping[str, np.ndarray],
    groups: Sequence[ChannelGroup] | None = None,
) -> tuple[onnx.ModelProto, dict[str, list[float]]]:
    """A copy of `model` with every channel group equalized.

    Args:
        model: the float model.
        ranges: tensor name → per-channel range (max − min over calibration data) of the group
            tensors; a group's range per channel is the largest over its tensors.
        groups: the groups to equalize (default: `channel_groups(model)`).

    Returns:
        (the equalized model, tensor name → factors t_c of every rescaled tensor).
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    changed: dict[str, np.ndarray] = {}
    factors: dict[str, list[float]] = {}
    for group in channel_groups(model) if groups is None else groups:
        seen = [np.asarray(ranges[t], np.float64) for t in group.tensors if t in ranges]
        if not seen or len({r.size for r in seen}) != 1:
            continue
        t = channel_factors(model, group, np.max(seen, axis=0))
        if t is None:
            continue
        apply_factors(model, group, t, changed)
        factors.update({name: t.tolist() for name in group.tensors})
    for init in out.graph.initializer:
        if init.name in changed:
            dtype = numpy_helper.to_array(init).dtype
            init.CopyFrom(numpy_helper.from_array(changed[init.name].astype(dtype), init.name))
    return out, factors
