"""Decompose the PRelu nodes TFLite's lowering cannot take into Relu, Min, Mul and Add.

    PRelu(x, α) = Relu(x) + α · Min(x, 0)

For x ≥ 0 the second term is 0 and for x < 0 the first is, so exactly one term is non-zero per
element: the sum is exact in float and, in int8, has no cancellation between two large terms.
ONNX PRelu broadcasts α to x's shape (unidirectionally), and the Mul broadcasts the same way, so
α keeps its channel axis: [C, 1] on [N, C, L] is per channel, [C] on [N, C] too.

onnx2tf 2.6.9 lowers PRelu to TFLite PRELU only when α is a constant and either a single value
or one value per channel on axis 1 of a 2-D or 4-D input; anything else (a Conv1d's [N, C, L],
a Linear on [B, T, F], a 5-D tensor, a computed α) becomes an unrunnable CUSTOM op. Only those
nodes are rewritten: a PRelu that lowers natively keeps its single PRELU kernel.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnx_ir as ir

from bridge.passes import _ir
from bridge.passes.base import PassResult

log = logging.getLogger(__name__)

#: Input ranks for which onnx2tf lowers a per-channel PRelu to TFLite PRELU.
NATIVE_RANKS = frozenset({2, 4})


def decompose_prelu(model: onnx.ModelProto) -> PassResult:
    """Rewrite each PRelu that would not lower to PRELU as Relu(x) + α · Min(x, 0)."""
    irm = _ir.load(model)
    graph = irm.graph
    count = 0
    for node in list(graph):
        if not _ir.is_onnx_op(node, "PRelu") or len(node.inputs) != 2 or None in node.inputs:
            continue
        x, slope = node.inputs
        reason = lowering_problem(x, slope)
        if reason is None:
            continue
        dtype = _float_dtype(x, slope)
        if dtype is None:
            continue
        _rewrite(graph, node, dtype)
        log.debug("decomposed PRelu %r: %s", node.name, reason)
        count += 1
    return _ir.finish(model, irm, count, {"decomposed_prelu": count} if count else None)


def lowering_problem(x: ir.Value, slope: ir.Value) -> str | None:
    """Why PRelu(x, slope) would not lower to TFLite PRELU, or None when it would."""
    alpha = _ir.const_array(slope)
    if alpha is None:
        return "the slope is computed, not a constant"
    if alpha.size <= 1:
        return None
    r = _ir.rank(x)
    if r is None:
        return "the input's rank is unknown"
    if r not in NATIVE_RANKS:
        return f"a per-channel slope on a rank-{r} input"
    if not _on_axis_1(alpha.shape, r):
        return f"the slope of shape {list(alpha.shape)} is not per channel (axis 1)"
    shape = x.shape
    channels = shape[1] if shape is not None else None
    if not isinstance(channels, int) or channels != alpha.size:
        return f"the slope has {alpha.size} values for {channels} channels"
    return None


def _on_axis_1(shape: tuple[int, ...], r: int) -> bool:
    """Whether a slope of `shape`, right-aligned on a rank-`r` input, varies only on axis 1."""
    if len(shape) > r:
        return False
    padded = (1,) * (r - len(shape)) + tuple(shape)
    return all(d == 1 for i, d in enumerate(padded) if i != 1)


def _float_dtype(x: ir.Value, slope: ir.Value) -> np.dtype | None:
    for value in (x, slope):
        try:
            dtype = None if value.dtype is None else np.dtype(value.dtype.numpy())
        except TypeError:
            return None
        if dtype is not None:
            return dtype if dtype.kind == "f" else None
    return None


def _rewrite(graph: ir.Graph, node: ir.Node, dtype: np.dtype) -> None:
    x, slope = node.inputs
    base = node.name or "prelu"
    zero = _ir.add_initializer(graph, np.array(0, dtype=dtype), f"{base}_zero")
    relu = ir.Node("", "Relu", [x], name=f"{base}/relu")
    neg = ir.Node("", "Min", [x, zero], name=f"{base}/min0")
    scaled = ir.Node("", "Mul", [neg.outputs[0], slope], name=f"{base}/mul_slope")
    total = ir.Node("", "Add", [relu.outputs[0], scaled.outputs[0]], name=node.name)
    out = node.outputs[0]
    for n, suffix in ((relu, "relu"), (neg, "min0"), (scaled, "mul_slope")):
        n.outputs[0].name = f"{out.name}__prelu_{suffix}"
        n.outputs[0].type, n.outputs[0].shape = out.type, out.shape
    for new in (relu, neg, scaled, total):
        graph.insert_before(node, new)
    _ir.splice(graph, [node], out, total.outputs[0], take_name=True)
