"""Concatenate 4-D channel-first tensors on the channel axis as 3-D tensors.

    Concat(x₁ … xₖ, axis=1) on [N, Cᵢ, H, W]
        ⇒ Reshape(Concat(Reshape(x₁, [0, 0, -1]) …, axis=1), [0, ΣCᵢ, H, W])

Exact: flattening H and W keeps every element's (n, c) position, and concatenating along c
then restoring H and W puts each element back where the 4-D Concat puts it.

Why: onnx2tf 2.6.9 (flatbuffer_direct) holds 4-D tensors that never meet a layout-setting op
(Conv, pooling, Resize, Softmax, ...) in their ONNX (channel-first) shape, yet lowers a Concat
on axis 1 of such tensors as a CONCATENATION on axis 3, as if they were NHWC: `torch.cat([x,
x], 1)` on a [1, 7, 6, 5] input comes out [1, 7, 6, 10]. A 3-D Concat on axis 1 lowers
correctly. Only Concats none of whose inputs descends from a layout-setting op are rewritten,
so conv nets, whose Concats onnx2tf lowers in NHWC, keep theirs unchanged.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnx_ir as ir

from bridge.passes import _ir
from bridge.passes.base import PassResult

log = logging.getLogger(__name__)

#: ONNX ops after which onnx2tf holds a 4-D tensor channel-last and maps a Concat's axis right.
LAYOUT_OPS = frozenset(
    {
        "Conv",
        "ConvTranspose",
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "LpPool",
        "Resize",
        "Upsample",
        "DepthToSpace",
        "SpaceToDepth",
        "Softmax",
        "LogSoftmax",
    }
)


def flatten_channel_concat(model: onnx.ModelProto) -> PassResult:
    """Rewrite each 4-D channel Concat that onnx2tf would lower on the wrong axis (see above)."""
    irm = _ir.load(model)
    graph = irm.graph
    after_layout = _after_layout_ops(graph)
    count = 0
    for node in list(graph):
        if not _ir.is_onnx_op(node, "Concat") or not _is_channel_concat(node):
            continue
        if any(after_layout.get(id(v), False) for v in node.inputs):
            continue
        _rewrite(graph, node)
        count += 1
    return _ir.finish(model, irm, count, {"flattened_concats": count} if count else None)


def _is_channel_concat(node: ir.Node) -> bool:
    """A Concat of rank-4 tensors on axis 1 whose output's C, H and W are static."""
    out = node.outputs[0]
    if len(node.inputs) < 2 or None in node.inputs or _ir.rank(out) != 4:
        return False
    if _ir.attr(node, "axis", 0) not in (1, -3):
        return False
    return all(isinstance(d, int) for d in out.shape.dims[1:])  # inputs share the output's rank


def _after_layout_ops(graph: ir.Graph) -> dict[int, bool]:
    """Value id → whether an op in LAYOUT_OPS is among its ancestors (nodes in graph order)."""
    flags: dict[int, bool] = {}
    for node in graph:
        flag = _ir.is_onnx_op(node, *LAYOUT_OPS) or any(
            flags.get(id(v), False) for v in node.inputs if v is not None
        )
        for v in node.outputs:
            flags[id(v)] = flag
    return flags


def _rewrite(graph: ir.Graph, node: ir.Node) -> None:
    out = node.outputs[0]
    base = node.name or "concat"
    flat = _ir.add_initializer(graph, np.array([0, 0, -1], np.int64), f"{base}_flat_shape")
    back = _ir.add_initializer(graph, np.array([0, *out.shape.dims[1:]], np.int64), f"{base}_shape")
    flats = []
    for i, x in enumerate(node.inputs):
        r = ir.Node("", "Reshape", [x, flat], name=f"{base}/flatten_{i}")
        r.outputs[0].name = f"{out.name}__flat_in{i}"
        r.outputs[0].type = x.type
        if (shape := _ir.static_shape(x)) is not None:
            r.outputs[0].shape = ir.Shape([shape[0], shape[1], shape[2] * shape[3]])
        flats.append(r)
    cat = ir.Node("", "Concat", [r.outputs[0] for r in flats], attributes=[ir.AttrInt64("axis", 1)])
    cat.name = f"{base}/flat"
    cat.outputs[0].name = f"{out.name}__flat"
    cat.outputs[0].type = out.type
    unflat = ir.Node("", "Reshape", [cat.outputs[0], back], name=node.name)
    for new in (*flats, cat, unflat):
        graph.insert_before(node, new)
    _ir.splice(graph, [node], out, unflat.outputs[0], take_name=True)
    log.debug("concatenated %r on the channel axis as 3-D tensors", node.name)
