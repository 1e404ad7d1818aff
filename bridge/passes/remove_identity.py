"""Remove nodes that return their input unchanged.

A node is removed when its first output equals its first input, element for element:

- `Identity`; `Dropout` in inference mode (no `training_mode`, or it is constant false, or
  the ratio is 0) whose mask nobody reads;
- `Cast` to the input's own type, `CastLike` of the input's own type;
- `Reshape`, `Flatten`, `Squeeze`, `Unsqueeze`, `Expand` whose static output shape equals the
  static input shape; `Transpose` with the identity permutation; `Concat` of one input;
  `Pad` with all-zero pads;
- `x + 0`, `0 + x`, `x − 0`, `x · 1`, `1 · x`, `x / 1` with a constant that broadcasts
  without changing x's shape.

Readers of the output then read the input. A graph output keeps its name: the input tensor is
renamed to it. The node stays when that is impossible (the input is a graph input, an
initializer or another graph output).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnx_ir as ir

from bridge.passes import _ir
from bridge.passes.base import PassResult

log = logging.getLogger(__name__)

_SHAPE_ONLY = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Expand")
#: op → (neutral constant, whether the constant may come first).
_NEUTRAL = {"Add": (0, True), "Sub": (0, False), "Mul": (1, True), "Div": (1, False)}


def remove_identity(model: onnx.ModelProto) -> PassResult:
    """Bypass and remove every node that returns its input unchanged."""
    irm = _ir.load(model)
    graph = irm.graph
    count = 0
    for node in list(graph):
        source = _passthrough(node)
        if source is None:
            continue
        out = node.outputs[0]
        if not _ir.can_splice(out, source):
            log.debug("keeping %s %r: it links graph I/O directly", node.op_type, node.name)
            continue
        _ir.splice(graph, [node], out, source)
        count += 1
    return _ir.finish(model, irm, count)


def _passthrough(node: ir.Node) -> ir.Value | None:
    """The input that `node` returns unchanged as its first output, else None."""
    if node.domain not in _ir.ONNX_DOMAINS or not node.inputs or node.inputs[0] is None:
        return None
    x = node.inputs[0]
    if any(o.uses() or o.is_graph_output() for o in node.outputs[1:]):
        return None
    op = node.op_type
    if op == "Identity" or (op == "Concat" and len(node.inputs) == 1):
        return x
    if op == "Dropout":
        return x if _dropout_is_identity(node) else None
    if op == "Cast":
        return x if x.dtype is not None and _ir.attr(node, "to") == x.dtype else None
    if op == "CastLike":
        like = node.inputs[1] if len(node.inputs) > 1 else None
        return x if like is not None and x.dtype is not None and like.dtype == x.dtype else None
    if op in _SHAPE_ONLY:
        shape = _ir.static_shape(x)
        return x if shape is not None and shape == _ir.static_shape(node.outputs[0]) else None
    if op == "Transpose":
        perm = _ir.attr(node, "perm")
        r = _ir.rank(x)
        identity = list(perm) == list(range(len(perm))) if perm is not None else r in (0, 1)
        return x if identity else None
    if op == "Pad":
        pads = _ir.const_array(node.inputs[1]) if len(node.inputs) > 1 else None
        return x if pads is not None and not np.any(pads) else None
    if op in _NEUTRAL:
        return _neutral_operand(node)
    return None


def _dropout_is_identity(node: ir.Node) -> bool:
    training = node.inputs[2] if len(node.inputs) > 2 else None
    if training is None:
        return True
    flag = _ir.const_array(training)
    if flag is not None and not bool(flag.item()):
        return True
    ratio = _ir.const_array(node.inputs[1]) if len(node.inputs) > 1 else None
    return ratio is not None and ratio.size == 1 and float(ratio.item()) == 0.0


def _neutral_operand(node: ir.Node) -> ir.Value | None:
    """x for `x ∘ c` (or `c ∘ x` when ∘ commutes) where c is the operation's neutral element."""
    neutral, commutes = _NEUTRAL[node.op_type]
    if len(node.inputs) != 2 or None in node.inputs:
        return None
    a, b = node.inputs
    orders = [(a, b), (b, a)] if commutes else [(a, b)]
    for x, c in orders:
        const = _ir.const_array(c)
        if const is None or const.dtype != _np_dtype(x) or not np.all(const == neutral):
            continue
        out_shape = _ir.static_shape(node.outputs[0])
        if out_shape is not None and out_shape == _ir.static_shape(x):
            return x
        r = _ir.rank(x)
        if const.size == 1 and r is not None and const.ndim <= r:
            return x
    return None


def _np_dtype(value: ir.Value) -> np.dtype | None:
    try:
        return value.dtype.numpy() if value.dtype is not None else None
    except TypeError:
        return None
