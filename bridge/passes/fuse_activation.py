"""Put activations in the canonical forms the TFLite lowering fuses into the preceding op.

TFLite fuses RELU, RELU6 and RELU_N1_TO_1 into convolutions, fully connected layers and
element-wise ops itself; it only has to recognise them. Every clamp is rewritten to one form:

- `Relu(x)`, `Clip(x, lo, hi)`, `Max(x, c)`, `Min(x, c)` are clamps [lo, hi] of x; a chain of
  clamps whose inner outputs have no other reader is one clamp [max(lo), min(hi)];
- clamp [0, ∞) → `Relu(x)`; any other clamp → `Clip(x, lo, hi)` with scalar initializer
  bounds in x's dtype and an infinite bound left out (so relu6 is always `Clip(x, 0, 6)`).
  A lone `Min` or `Max` with one finite bound is left alone.
- `x · HardSigmoid(x)` with α = 1/6, β = 1/2 → `HardSwish(x)` (same definition, opset ≥ 14).

`x · Sigmoid(x)` (swish) stays as it is. All rewrites are exact for finite inputs: clamping
twice equals clamping once to the intersection of the ranges. The hints count each activation
kind and how many activations directly follow an op that TFLite can fuse them into.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_ir as ir

from bridge.passes import _ir
from bridge.passes.base import PassResult

log = logging.getLogger(__name__)

#: Bounds at or beyond float32's largest value mean "no bound" (opset-6 Clip defaults).
_FLT_MAX = float(np.finfo(np.float32).max)
#: ONNX ops whose TFLite counterpart has a fused_activation_function field.
FUSABLE_PRODUCERS = frozenset(
    {
        "Conv",
        "ConvTranspose",
        "Gemm",
        "MatMul",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "AveragePool",
        "MaxPool",
        "Concat",
    }
)
_HARD_SIGMOID_ALPHA = np.float32(1 / 6)


@dataclass(frozen=True)
class _Clamp:
    x: ir.Value
    lo: float
    hi: float
    dtype: np.dtype | None  # of x, or of the bound constants when x's type is unknown
    nodes: tuple[ir.Node, ...]  # the clamp chain, innermost first


def fuse_activation(model: onnx.ModelProto) -> PassResult:
    """Rewrite clamps and hard-swish patterns into their canonical forms."""
    irm = _ir.load(model)
    graph, version = irm.graph, _ir.opset(irm)
    count = 0
    for node in reversed(list(graph)):  # outermost clamp first, so it takes the whole chain
        if node.graph is None:  # already removed as part of a later node's rewrite
            continue
        if _hard_swish(graph, node, version) or _canonical_clamp(graph, node, version):
            count += 1
    return _ir.finish(model, irm, count, _hints(graph))


def _canonical_clamp(graph: ir.Graph, node: ir.Node, version: int) -> bool:
    clamp = _clamp_chain(node)
    if clamp is None or clamp.lo > clamp.hi or (clamp.lo, clamp.hi) == (-np.inf, np.inf):
        return False
    dtype = clamp.dtype
    if dtype is not None and dtype.kind != "f":
        return False
    if (clamp.lo, clamp.hi) == (0.0, np.inf):
        if len(clamp.nodes) == 1 and node.op_type == "Relu":
            return False
        new = ir.Node("", "Relu", [clamp.x], name=node.name)
    else:
        one_sided = np.isinf(clamp.lo) or np.isinf(clamp.hi)
        if dtype is None or version < 11:
            return False
        if one_sided and node.op_type != "Clip" and len(clamp.nodes) == 1:
            return False
        if len(clamp.nodes) == 1 and _is_canonical_clip(node, dtype):
            return False
        lo = _bound(graph, clamp.lo, dtype, f"{node.name or 'clip'}_min")
        hi = _bound(graph, clamp.hi, dtype, f"{node.name or 'clip'}_max")
        new = ir.Node("", "Clip", [clamp.x, lo, hi], name=node.name)
    old_inputs = [v for n in clamp.nodes for v in n.inputs[1:]]
    graph.insert_before(node, new)
    _ir.splice(graph, list(clamp.nodes), node.outputs[0], new.outputs[0], take_name=True)
    for value in old_inputs:
        _ir.drop_if_unused(graph, value)
    return True


def _clamp_chain(node: ir.Node) -> _Clamp | None:
    """`node` as a clamp, merged with the clamps before it that only it reads."""
    own = as_clamp(node)
    if own is None:
        return None
    x, lo, hi, dtype = own
    nodes = [node]
    while (inner := x.producer()) is not None and _ir.sole_reader(x) is nodes[0]:
        prev = as_clamp(inner)
        if prev is None:
            break
        x, lo, hi, dtype = prev[0], max(lo, prev[1]), min(hi, prev[2]), dtype or prev[3]
        nodes.insert(0, inner)
    return _Clamp(x, lo, hi, _dtype(x) or dtype, tuple(nodes))


def as_clamp(node: ir.Node) -> tuple[ir.Value, float, float, np.dtype | None] | None:
    """(x, lo, hi, dtype of the bounds) when `node` clamps x to [lo, hi], else None."""
    if node.domain not in _ir.ONNX_DOMAINS or not node.inputs or node.inputs[0] is None:
        return None
    x = node.inputs[0]
    if node.op_type == "Relu":
        return x, 0.0, np.inf, None
    if node.op_type == "Clip":
        if "min" in node.attributes or "max" in node.attributes:  # opset < 11
            lo = _unbounded(_ir.attr(node, "min", -np.inf))
            return x, lo, _unbounded(_ir.attr(node, "max", np.inf)), np.dtype(np.float32)
        consts = [_ir.const_array(v) if v is not None else None for v in node.inputs[1:3]]
        consts += [None] * (2 - len(consts))
        for c, v in zip(consts, node.inputs[1:3], strict=False):
            if v is not None and (c is None or c.size != 1):
                return None
        lo = -np.inf if consts[0] is None else _unbounded(float(consts[0].item()))
        hi = np.inf if consts[1] is None else _unbounded(float(consts[1].item()))
        dtype = next((c.dtype for c in consts if c is not None), None)
        return x, lo, hi, dtype
    if node.op_type in ("Max", "Min") and len(node.inputs) == 2 and None not in node.inputs:
        for x, c in (node.inputs, node.inputs[::-1]):
            const = _ir.const_array(c)
            r = _ir.rank(x)
            if const is None or const.size != 1 or (const.ndim and (r is None or const.ndim > r)):
                continue
            if const.dtype.kind != "f" or _dtype(x) not in (None, const.dtype):
                continue
            value = _unbounded(float(const.item()))
            if node.op_type == "Max":
                return x, value, np.inf, const.dtype
            return x, -np.inf, value, const.dtype
    return None


def _unbounded(v: float) -> float:
    return float(np.sign(v) * np.inf) if abs(v) >= _FLT_MAX else float(v)


def _is_canonical_clip(node: ir.Node, dtype: np.dtype) -> bool:
    if node.op_type != "Clip" or "min" in node.attributes or "max" in node.attributes:
        return False
    for v in node.inputs[1:3]:
        if v is None:
            continue
        const = _ir.const_array(v)
        if not v.is_initializer() or const is None or const.ndim != 0 or const.dtype != dtype:
            return False
        if np.isinf(const) or abs(float(const)) >= _FLT_MAX:
            return False
    return True


def _bound(graph: ir.Graph, value: float, dtype: np.dtype, name: str) -> ir.Value | None:
    if np.isinf(value):
        return None
    return _ir.add_initializer(graph, np.array(value, dtype=dtype), name)


def _dtype(value: ir.Value) -> np.dtype | None:
    try:
        return None if value.dtype is None else np.dtype(value.dtype.numpy())
    except TypeError:  # a dtype numpy cannot hold
        return None


def _hard_swish(graph: ir.Graph, node: ir.Node, version: int) -> bool:
    """Rewrite `x · HardSigmoid(x)` into `HardSwish(x)`; True if it did."""
    if version < 14 or not _ir.is_onnx_op(node, "Mul") or len(node.inputs) != 2:
        return False
    for x, gate in (node.inputs, node.inputs[::-1]):
        hs = gate.producer() if gate is not None else None
        if hs is None or not _ir.is_onnx_op(hs, "HardSigmoid") or hs.inputs[0] is not x:
            continue
        alpha = np.float32(_ir.attr(hs, "alpha", 0.2))
        beta = np.float32(_ir.attr(hs, "beta", 0.5))
        if alpha != _HARD_SIGMOID_ALPHA or beta != np.float32(0.5):
            continue
        if _ir.sole_reader(gate) is not node:
            continue
        new = ir.Node("", "HardSwish", [x], name=node.name)
        graph.insert_before(node, new)
        _ir.splice(graph, [hs, node], node.outputs[0], new.outputs[0], take_name=True)
        return True
    return False


def _hints(graph: ir.Graph) -> dict[str, object]:
    """Counts of activation kinds, and how many follow an op TFLite fuses them into."""
    kinds: dict[str, int] = {}
    fusable = 0
    for node in graph:
        kind = _kind(node)
        if kind is None:
            continue
        kinds[kind] = kinds.get(kind, 0) + 1
        x = node.inputs[0]
        producer = x.producer() if x is not None else None
        if (
            kind in ("relu", "relu6", "relu_n1_to_1", "tanh")
            and producer is not None
            and _ir.is_onnx_op(producer, *FUSABLE_PRODUCERS)
            and _ir.sole_reader(x) is node
        ):
            fusable += 1
    return {"activations": dict(sorted(kinds.items())), "fusable_into_producer": fusable}


def _kind(node: ir.Node) -> str | None:
    if node.domain not in _ir.ONNX_DOMAINS:
        return None
    if node.op_type in ("Relu", "Tanh", "Sigmoid", "HardSwish", "HardSigmoid", "LeakyRelu"):
        if node.op_type == "Sigmoid" and _is_swish_gate(node):
            return None
        return {"HardSwish": "hard_swish", "HardSigmoid": "hard_sigmoid"}.get(
            node.op_type, node.op_type.lower()
        )
    if node.op_type == "Mul" and any(
        v is not None and (p := v.producer()) is not None and _is_swish_gate(p) for v in node.inputs
    ):
        return "swish"
    if node.op_type == "Clip" and (clamp := as_clamp(node)) is not None:
        return {(0.0, 6.0): "relu6", (-1.0, 1.0): "relu_n1_to_1"}.get((clamp[1], clamp[2]), "clip")
    return None


def _is_swish_gate(sigmoid: ir.Node) -> bool:
    """Whether this Sigmoid's output multiplies its own input (x · sigmoid(x))."""
    if not _ir.is_onnx_op(sigmoid, "Sigmoid") or sigmoid.inputs[0] is None:
        return False
    x = sigmoid.inputs[0]
    return any(
        _ir.is_onnx_op(use.node, "Mul") and x in use.node.inputs
        for use in sigmoid.outputs[0].uses()
    )
