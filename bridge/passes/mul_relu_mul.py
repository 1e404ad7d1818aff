"""Keep onnx2tf from dropping the activation in `x·c1 → Relu → ·c2` (c1, c2 constants).

onnx2tf 2.6.9 fuses a Relu or Relu6 into the MUL before it (MUL with fused RELU), then its
`fold_consecutive_mul_constants` cleanup merges that MUL and the next constant MUL into one
MUL(x, c1·c2) without looking at the fused activation: the activation is silently lost. A
division by a constant counts as a scale too (onnx2tf lowers it to MUL by the reciprocal). The
pattern needs the scale's and the activation's outputs to be read once and not be graph outputs.

Each match is rewritten so the pattern no longer reaches onnx2tf, exactly up to the float
rounding of c1·c2:

- Relu, c2 ≥ 0: Relu(x·c1)·c2 = Relu(x·(c1·c2)), since Relu(a)·k = Relu(a·k) for k ≥ 0;
- Relu, c1 ≥ 0: Relu(x·c1)·c2 = Relu(x)·(c1·c2), for the same reason;
- otherwise (signs mixed in both, or Relu6): a second copy of the activation before the second
  scale, as Act(Act(a)) = Act(a). onnx2tf fuses the first copy and keeps the second as its own
  op, which the fold does not look through; it costs one element-wise op.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnx_ir as ir

from bridge.passes import _ir
from bridge.passes.base import PassResult
from bridge.passes.fuse_activation import as_clamp

log = logging.getLogger(__name__)

#: Clip bounds onnx2tf lowers to RELU6, the one clamp besides Relu it fuses into a MUL.
RELU6_BOUNDS = (0.0, 6.0)


def mul_relu_mul(model: onnx.ModelProto) -> PassResult:
    """Rewrite every `scale → Relu|Relu6 → scale` chain that onnx2tf would fold wrongly."""
    irm = _ir.load(model)
    graph = irm.graph
    touched: set[int] = set()
    kinds: dict[str, int] = {}
    for act in list(graph):
        if id(act) in touched or not _fused_into_mul(act):
            continue
        match = _match(act)
        if match is None:
            continue
        first, (x, k1), second, k2 = match
        if touched & {id(first), id(second)}:
            continue
        kind = _rewrite(graph, first, act, second, x, k1, k2)
        touched.update({id(first), id(act), id(second)})
        kinds[kind] = kinds.get(kind, 0) + 1
        log.debug("%s %r between constant scales: %s", act.op_type, act.name, kind)
    count = sum(kinds.values())
    return _ir.finish(model, irm, count, {"mul_relu_mul": kinds} if count else None)


def _fused_into_mul(node: ir.Node) -> bool:
    """Whether onnx2tf fuses `node` into a preceding MUL: a Relu, or a Clip to [0, 6]."""
    if _ir.is_onnx_op(node, "Relu"):
        return True
    clamp = as_clamp(node) if _ir.is_onnx_op(node, "Clip") else None
    return clamp is not None and clamp[1:3] == RELU6_BOUNDS


def _match(act: ir.Node) -> tuple[ir.Node, tuple[ir.Value, np.ndarray], ir.Node, np.ndarray] | None:
    """(first scale, (x, c1), second scale, c2) around `act`, or None when it does not fit."""
    a, b = act.inputs[0], act.outputs[0]
    first = a.producer() if a is not None else None
    if first is None or _ir.sole_reader(a) is not act:
        return None
    second = _ir.sole_reader(b)
    scaled = _scale(first, None)
    if second is None or scaled is None:
        return None
    again = _scale(second, b)
    if again is None:
        return None
    return first, scaled, second, again[1]


def _scale(node: ir.Node, data: ir.Value | None) -> tuple[ir.Value, np.ndarray] | None:
    """(x, k) when `node` computes x·k with a float constant k (x·c, c·x or x/c), else None.

    With `data`, x must be that value."""
    if len(node.inputs) != 2 or None in node.inputs or len(node.outputs) != 1:
        return None
    a, b = node.inputs
    if _ir.is_onnx_op(node, "Mul"):
        options = [(a, b), (b, a)]
    elif _ir.is_onnx_op(node, "Div"):
        options = [(a, b)]
    else:
        return None
    for x, c in options:
        k = _ir.const_array(c)
        if k is None or k.dtype.kind != "f" or _ir.const_array(x) is not None:
            continue
        if data is not None and x is not data:
            continue
        if node.op_type == "Div":
            with np.errstate(divide="ignore"):
                k = (1.0 / k.astype(np.float64)).astype(k.dtype)
        return x, k
    return None


def _rewrite(
    graph: ir.Graph,
    first: ir.Node,
    act: ir.Node,
    second: ir.Node,
    x: ir.Value,
    k1: np.ndarray,
    k2: np.ndarray,
) -> str:
    """Apply the rewrite the module docstring picks for this match; return its kind."""
    with np.errstate(over="ignore", invalid="ignore"):
        product = (k1.astype(np.float64) * k2.astype(np.float64)).astype(k2.dtype)
    exact = _ir.is_onnx_op(act, "Relu") and bool(np.all(np.isfinite(product)))
    if exact and (np.all(k2 >= 0) or np.all(k1 >= 0)):
        return _fold(graph, (first, act, second), x, product, scale_first=bool(np.all(k2 >= 0)))
    copy = ir.Node(
        "", act.op_type, [act.outputs[0], *act.inputs[1:]], list(act.attributes.values())
    )
    copy.name = f"{act.name or act.op_type}/again"
    out = copy.outputs[0]
    out.name = f"{act.outputs[0].name}__again"
    out.type, out.shape = act.outputs[0].type, act.outputs[0].shape
    graph.insert_after(act, copy)
    for use in list(act.outputs[0].uses()):
        if use.node is second:
            second.replace_input_with(use.idx, out)
    return "activation repeated"


def _fold(
    graph: ir.Graph,
    chain: tuple[ir.Node, ir.Node, ir.Node],
    x: ir.Value,
    product: np.ndarray,
    *,
    scale_first: bool,
) -> str:
    """Replace the chain by Relu(x·k) (`scale_first`) or Relu(x)·k, with k = c1·c2."""
    first, act, second = chain
    y = second.outputs[0]
    base = second.name or y.name
    k = _ir.add_initializer(graph, product, f"{base}_scale")
    if scale_first:
        head = ir.Node("", "Mul", [x, k], name=f"{base}/scaled")
        tail = ir.Node("", "Relu", [head.outputs[0]], name=act.name)
    else:
        head = ir.Node("", "Relu", [x], name=act.name)
        tail = ir.Node("", "Mul", [head.outputs[0], k], name=f"{base}/scaled")
    head.outputs[0].name = f"{y.name}__{head.op_type.lower()}"
    head.outputs[0].type = y.type
    head.outputs[0].shape = y.shape if scale_first else x.shape
    for node in (head, tail):
        graph.insert_before(second, node)
    constants = [v for n in (first, second) for v in n.inputs if v is not None and v is not x]
    _ir.splice(graph, [second, act, first], y, tail.outputs[0], take_name=True)
    for v in constants:
        _ir.drop_if_unused(graph, v)
    return "scale then Relu" if scale_first else "Relu then scale"
