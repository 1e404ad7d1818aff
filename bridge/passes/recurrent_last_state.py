"""Read a recurrent layer's final hidden state from its output sequence instead of `Y_h`.

    Y_h[d] = Y[T - 1, d]   for a forward direction d
    Y_h[d] = Y[0, d]       for a reverse direction d

An ONNX LSTM, GRU or RNN with layout 0 writes Y [T, D, B, H] and Y_h [D, B, H]. Without
`sequence_lens`, every batch row runs all T steps, so the final hidden state of a direction is
its output at the last step it computes: step T - 1 going forward, step 0 in reverse. The rewrite
reads Y_h's readers from Squeeze(Slice(Y)) (one Slice per direction, concatenated for
bidirectional layers), exactly the same numbers.

Why: onnx2tf 2.6.9 lowers Y_h wrongly when layers are stacked (a 2-layer LSTM encoder's
`h_n[-1]` came out at 12.9 dB), loses its rank (so a following Gemm became a CUSTOM op), and
its Y path is the one it verifies best. The cell state Y_c has no such identity and is left as is.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnx_ir as ir

from bridge.passes import _ir
from bridge.passes.base import PassResult

log = logging.getLogger(__name__)

#: Recurrent ops whose output 0 is Y [T, D, B, H] and output 1 is Y_h [D, B, H].
RECURRENT_OPS = ("LSTM", "GRU", "RNN")
_END = np.iinfo(np.int64).max


def recurrent_last_state(model: onnx.ModelProto) -> PassResult:
    """Rewrite every read of an eligible recurrent node's Y_h into a slice of its Y."""
    irm = _ir.load(model)
    if _ir.opset(irm) < 13:  # Squeeze takes its axes as an input from opset 13
        return _ir.finish(model, irm, 0)
    count = 0
    for node in list(irm.graph):
        if not _ir.is_onnx_op(node, *RECURRENT_OPS):
            continue
        reason = _check(node)
        if reason is not None:
            log.debug("%s %r keeps its Y_h: %s", node.op_type, node.name, reason)
            continue
        _rewrite(irm.graph, node)
        count += 1
    hints = {"recurrent_last_state": count} if count else None
    return _ir.finish(model, irm, count, hints)


def _check(node: ir.Node) -> str | None:
    """Why the node's Y_h cannot be read from Y, or None when it can."""
    if len(node.outputs) < 2:
        return "no Y_h output"
    y_h = node.outputs[1]
    if not y_h.name or not (y_h.uses() or y_h.is_graph_output()):
        return "Y_h is not read"
    if _ir.attr(node, "layout", 0) != 0:
        return "layout 1 (batch-major) is not handled"
    if len(node.inputs) > 4 and node.inputs[4] is not None:
        return "sequence_lens given: rows stop at different steps"
    if _direction(node) is None:
        return f"unknown direction {_ir.attr(node, 'direction')!r}"
    return None


def _direction(node: ir.Node) -> tuple[bool, ...] | None:
    """For each direction of the node, whether it runs in reverse."""
    direction = _ir.attr(node, "direction", "forward")
    if isinstance(direction, bytes):
        direction = direction.decode()
    return {"forward": (False,), "reverse": (True,), "bidirectional": (False, True)}.get(direction)


def _rewrite(graph: ir.Graph, node: ir.Node) -> None:
    """Y_h's readers read the last step of Y per direction; Y_h becomes an unused output."""
    y, y_h = node.outputs[0], node.outputs[1]
    base = y_h.name
    if not y.name:
        y.name = f"{base}__sequence"
    zero = _ir.add_initializer(graph, np.array([0], dtype=np.int64), f"{base}__axis0")
    parts = []
    for d, reverse in enumerate(_direction(node) or ()):
        start, end = (0, 1) if reverse else (-1, _END)
        consts = [
            _ir.add_initializer(graph, np.array(v, dtype=np.int64), f"{base}__{k}{d}")
            for k, v in (("starts", [start, d]), ("ends", [end, d + 1]), ("axes", [0, 1]))
        ]
        step = ir.Node("", "Slice", [y, *consts], name=f"{node.name}/last_step{d}")
        squeeze = ir.Node("", "Squeeze", [step.outputs[0], zero], name=f"{node.name}/h{d}")
        step.outputs[0].name = f"{base}__step{d}"
        squeeze.outputs[0].name = f"{base}__h{d}"
        parts.append((step, squeeze))
    _insert(graph, node, parts, y_h)


def _insert(
    graph: ir.Graph, node: ir.Node, parts: list[tuple[ir.Node, ir.Node]], y_h: ir.Value
) -> None:
    """Place the new nodes after `node` and move Y_h's readers (and its name) onto them."""
    new_nodes = [n for pair in parts for n in pair]
    result = parts[0][1].outputs[0]
    if len(parts) > 1:
        halves = [p[1].outputs[0] for p in parts]
        axis = [ir.AttrInt64("axis", 0)]
        concat = ir.Node("", "Concat", halves, attributes=axis, name=f"{node.name}/h")
        concat.outputs[0].name = f"{y_h.name}__h"
        new_nodes.append(concat)
        result = concat.outputs[0]
    anchor = node
    for new in new_nodes:
        if new.graph is None:
            graph.insert_after(anchor, new)
        anchor = new
    name = y_h.name
    result.type, result.shape = y_h.type, y_h.shape
    ir.convenience.replace_all_uses_with(y_h, result, replace_graph_outputs=True)
    # an absent optional output, unless Y_c follows: onnx2tf 2.6.9 drops empty output names
    # and would then take Y_c for Y_h
    has_y_c = len(node.outputs) > 2 and bool(node.outputs[2].name)
    y_h.name = f"{name}__unread" if has_y_c else ""
    result.name = name
