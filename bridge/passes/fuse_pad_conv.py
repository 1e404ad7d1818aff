"""Fold a zero-constant Pad on the spatial axes into the `pads` of the Conv nodes that read it.

    Conv(Pad(x, p), pads=q) = Conv(x, pads=q + p_spatial)

Conv pads its input with zeros before sliding the kernel, so a Pad that only adds zeros at the
spatial borders is the same as a larger Conv `pads`; the begin and end pads of each spatial
axis add up. ONNX Conv `pads` are [x1_begin, x2_begin, ..., x1_end, x2_end]; Pad's are the same
over all axes, so for an N-D input Pad's [2:N] and [N+2:2N] are the spatial begins and ends.

TF-style "same" padding (EfficientNet-Lite) exports as F.pad → Conv. onnx2tf 2.6.9 lowers each
such Pad as its own PAD (on the image input with NHWC I/O, as TRANSPOSE → PAD → TRANSPOSE). A
Conv with explicit pads it lowers as SAME only when the pads are symmetric and keep the spatial
size; otherwise as a channel-last PAD and a VALID convolution. So when a 2-D Conv's summed pads
are exactly ONNX's SAME_UPPER pads for its static input (TF "SAME": out = ceil(in / stride),
total = max((out - 1)·stride + (kernel - 1)·dilation + 1 - in, 0), the odd one at the end) and
onnx2tf would not see that itself (a stride above 1 or uneven pads), the pass writes
`auto_pad="SAME_UPPER"` instead, which onnx2tf lowers to a SAME convolution, no PAD.

The Pad must be: mode "constant" with pad value 0 (or none), constant non-negative `pads`
(opset ≥ 11 input form; a constant `axes` input is expanded), nothing on the batch and channel
axes, and read only as the data input of Conv nodes (any `group`) whose `auto_pad` is NOTSET.
Pooling is never folded: its own pads are not zeros (max-pool pads with −∞, an average-pool
may leave them out of the count), while a Pad's zeros are data to it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import onnx
import onnx_ir as ir

from bridge.passes import _ir
from bridge.passes.base import PassResult

log = logging.getLogger(__name__)

#: Input rank of the convolutions given SAME_UPPER (2-D: the case checked against onnx2tf).
SAME_RANK = 4


def fuse_pad_conv(model: onnx.ModelProto) -> PassResult:
    """Fold every qualifying Pad into the Conv nodes that read it and remove the Pad."""
    irm = _ir.load(model)
    graph = irm.graph
    count = 0
    for pad in list(graph):
        if not _ir.is_onnx_op(pad, "Pad"):
            continue
        spatial = spatial_pads(pad)
        if isinstance(spatial, str):
            log.debug("Pad %r not folded: %s", pad.name, spatial)
            continue
        convs = [use.node for use in pad.outputs[0].uses()]
        reason = _readers_problem(pad, convs, len(spatial) // 2)
        if reason is not None:
            log.debug("Pad %r not folded: %s", pad.name, reason)
            continue
        _rewrite(graph, pad, convs, spatial)
        log.debug("folded Pad %r into %d Conv", pad.name, len(convs))
        count += 1
    return _ir.finish(model, irm, count, {"fused_pad_conv": count} if count else None)


def spatial_pads(pad: ir.Node) -> list[int] | str:
    """The Pad's spatial pads in Conv order (begins, then ends), or why it cannot be folded."""
    if _ir.attr(pad, "mode", "constant") != "constant":
        return f"mode {_ir.attr(pad, 'mode')!r} is not constant"
    inputs = list(pad.inputs)
    if len(inputs) < 2 or inputs[0] is None or inputs[1] is None:
        return "the pads are an attribute (opset < 11) or missing"
    if len(pad.outputs) != 1 or pad.outputs[0].is_graph_output():
        return "its output is a graph output"
    pads = _ir.const_array(inputs[1])
    if pads is None or pads.ndim != 1 or pads.dtype.kind not in "iu":
        return "the pads are not a constant 1-D integer tensor"
    value = inputs[2] if len(inputs) > 2 else None
    if value is not None:
        v = _ir.const_array(value)
        if v is None or v.size > 1 or np.any(v != 0):
            return "the pad value is not a constant 0"
    full = _full_pads(pads.astype(np.int64), inputs[0], inputs[3] if len(inputs) > 3 else None)
    if isinstance(full, str):
        return full
    if np.any(full < 0):
        return f"negative pads {full.tolist()} crop"
    r = full.size // 2
    begins, ends = full[:r], full[r:]
    if r < 3 or np.any(begins[:2]) or np.any(ends[:2]):
        return f"pads {full.tolist()} touch the batch or channel axis"
    return [int(p) for p in (*begins[2:], *ends[2:])]


def _full_pads(pads: np.ndarray, data: ir.Value, axes: ir.Value | None) -> np.ndarray | str:
    """`pads` over every axis of `data`: itself, or expanded from the `axes` it names."""
    if axes is None:
        return pads if pads.size % 2 == 0 else f"odd pads length {pads.size}"
    named = _ir.const_array(axes)
    r = _ir.rank(data)
    if named is None or r is None:
        return "the axes are computed or the input rank is unknown"
    named = [int(a) % r for a in named.ravel()]
    if pads.size != 2 * len(named) or len(set(named)) != len(named):
        return f"pads {pads.tolist()} do not match axes {named}"
    full = np.zeros(2 * r, np.int64)
    for k, a in enumerate(named):
        full[a], full[r + a] = pads[k], pads[len(named) + k]
    return full


def _readers_problem(pad: ir.Node, readers: list[ir.Node], k: int) -> str | None:
    """Why the Pad's readers are not all Conv nodes with `k` spatial axes it can fold into."""
    if not readers:
        return "nothing reads it"
    out = pad.outputs[0]
    for node in readers:
        if not _ir.is_onnx_op(node, "Conv"):
            return f"read by {node.op_type} {node.name!r}"
        if any(v is out for v in node.inputs[1:]):
            return f"read as a weight or bias by Conv {node.name!r}"
        if _ir.attr(node, "auto_pad", "NOTSET") != "NOTSET":
            return f"Conv {node.name!r} has auto_pad {_ir.attr(node, 'auto_pad')!r}"
        kernel = _ir.attr(node, "kernel_shape")
        if kernel is not None and len(kernel) != k:
            return f"Conv {node.name!r} has {len(kernel)} spatial axes, the Pad {k}"
        if len(_ir.attr(node, "pads", [0] * (2 * k))) != 2 * k:
            return f"Conv {node.name!r} has pads of the wrong length"
    return None


def _rewrite(graph: ir.Graph, pad: ir.Node, convs: list[ir.Node], spatial: list[int]) -> None:
    """Add `spatial` to each Conv's pads, point it at the Pad's input, drop the Pad."""
    data, out = pad.inputs[0], pad.outputs[0]
    for conv in convs:
        old = _ir.attr(conv, "pads", [0] * len(spatial))
        new = [int(a) + b for a, b in zip(old, spatial, strict=True)]
        if new == same_upper_pads(conv, data) and _needs_same_upper(conv, new):
            conv.attributes.pop("pads", None)
            conv.attributes["auto_pad"] = ir.AttrString("auto_pad", "SAME_UPPER")
        else:
            conv.attributes["pads"] = ir.AttrInt64s("pads", new)
        for use in list(out.uses()):
            if use.node is conv:
                conv.replace_input_with(use.idx, data)
    constants = [v for v in pad.inputs[1:] if v is not None]
    graph.remove(pad, safe=True)
    for v in constants:
        _ir.drop_if_unused(graph, v)


def same_upper_pads(conv: ir.Node, data: ir.Value) -> list[int] | None:
    """A 2-D Conv's SAME_UPPER pads (Conv order) on `data`'s static shape, or None if unknown."""
    shape = _ir.static_shape(data)
    weight = _ir.static_shape(conv.inputs[1]) if len(conv.inputs) > 1 else None
    if shape is None or len(shape) != SAME_RANK or weight is None or len(weight) != SAME_RANK:
        return None
    k = len(shape) - 2
    return same_upper(
        shape[2:],
        _ir.attr(conv, "kernel_shape", weight[2:]),
        _ir.attr(conv, "strides", [1] * k),
        _ir.attr(conv, "dilations", [1] * k),
    )


def same_upper(
    sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int]
) -> list[int]:
    """ONNX's SAME_UPPER pads of spatial `sizes`, begins then ends: out = ceil(in / stride),
    total = max((out − 1)·stride + (kernel − 1)·dilation + 1 − in, 0), the odd one at the end."""
    begins, ends = [], []
    for size, kk, s, d in zip(sizes, kernel, strides, dilations, strict=True):
        total = max((-(-size // s) - 1) * s + (kk - 1) * d + 1 - size, 0)
        begins.append(total // 2)
        ends.append(total - total // 2)
    return begins + ends


def _needs_same_upper(conv: ir.Node, pads: list[int]) -> bool:
    """Whether onnx2tf would lower `pads` (TF "same" pads) as PAD + VALID, not as SAME."""
    k = len(pads) // 2
    strides = _ir.attr(conv, "strides", [1] * k)
    return any(s != 1 for s in strides) or pads[:k] != pads[k:]
