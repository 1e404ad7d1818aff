"""Cancel TRANSPOSE pairs that undo each other, directly or across one unary elementwise op.

Two patterns, applied until nothing changes:

    x ─TRANSPOSE(p1)→ a ─TRANSPOSE(p2)→ b                  with p1∘p2 = id:  readers of b read x
    x ─TRANSPOSE(p1)→ a ─U→ u ─TRANSPOSE(p2)→ b            with p1∘p2 = id:  x ─U→ b

Applying p1 then p2 gives out[i] = x[p1[p2[i]]], so the pair is the identity when
p1[p2[i]] = i for every i. U is any op that maps each element on its own (RELU, LOGISTIC, ...),
so it commutes with a transpose. These pairs appear where onnx2tf's channel-last kernels meet a
channel-first graph boundary, and where `layout.py` adds NHWC boundary transposes.

Tensors that vanish are reported in `moved`: old name → (surviving tensor name, perm), meaning
the old tensor equals transpose(surviving tensor, perm), so tensor correspondences can follow.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from bridge.lower import graph_edit, tflite_io

log = logging.getLogger(__name__)

#: Ops that act on each element independently (one data input, one output, per-tensor params).
UNARY_ELEMENTWISE = frozenset(
    {
        "ABS", "CAST", "CEIL", "COS", "ELU", "EXP", "FLOOR", "GELU", "HARD_SWISH", "LEAKY_RELU",
        "LOG", "LOGISTIC", "NEG", "RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1", "ROUND",
        "RSQRT", "SIGN", "SIN", "SQRT", "SQUARE", "TANH",
    }
)  # fmt: skip

#: old tensor name → (name of the tensor that now holds its values, perm from that tensor).
Moved = dict[str, tuple[str, tuple[int, ...]]]


def cancel_transposes(model: Any) -> tuple[int, Moved]:
    """Remove inverse TRANSPOSE pairs from the main subgraph in place.

    Returns:
        (number of TRANSPOSE ops removed, moved tensors).
    """
    moved: Moved = {}
    removed = 0
    while True:
        n = _cancel_once(model, moved)
        if n == 0:
            break
        removed += n
    if removed:
        graph_edit.prune_tensors(model)
        log.debug("cancelled %d TRANSPOSE ops", removed)
    return removed, moved


def _perm(model: Any, op: Any) -> list[int] | None:
    if len(op.inputs) < 2:
        return None
    value = graph_edit.const_array(model, int(op.inputs[1]))
    return None if value is None else [int(v) for v in value.ravel()]


def _is_inverse(p1: list[int], p2: list[int]) -> bool:
    return len(p1) == len(p2) and all(p1[p2[i]] == i for i in range(len(p1)))


def _cancel_once(model: Any, moved: Moved) -> int:
    """Apply the first matching pattern; return the number of TRANSPOSE ops removed."""
    sg = model.subgraphs[0]
    readers = graph_edit.consumers(sg)
    writer = graph_edit.producers(sg)
    outputs = {int(t) for t in sg.outputs}
    names = [tflite_io.op_name(model, op) for op in sg.operators]
    for i2, op2 in enumerate(sg.operators):
        if names[i2] != "TRANSPOSE" or (p2 := _perm(model, op2)) is None:
            continue
        mid, b = int(op2.inputs[0]), int(op2.outputs[0])
        i_mid = writer.get(mid)
        if i_mid is None:
            continue
        if names[i_mid] == "TRANSPOSE":
            p1 = _perm(model, sg.operators[i_mid])
            if p1 is not None and _is_inverse(p1, p2):
                return _cancel_pair(model, (i_mid, i2), readers, writer, outputs, moved, p2)
        elif names[i_mid] in UNARY_ELEMENTWISE:
            u_op = sg.operators[i_mid]
            a = int(u_op.inputs[0])
            i1 = writer.get(a)
            if i1 is None or names[i1] != "TRANSPOSE" or len(readers[mid]) != 1:
                continue
            if mid in outputs or a in outputs or len(readers[a]) != 1 or _per_channel(sg, a, mid):
                continue
            p1 = _perm(model, sg.operators[i1])
            if p1 is not None and _is_inverse(p1, p2):
                x = int(sg.operators[i1].inputs[0])
                u_op.inputs = u_op.inputs.copy()
                u_op.inputs[0] = x
                u_op.outputs = u_op.outputs.copy()
                u_op.outputs[0] = b
                _record(moved, sg, a, x, p1)
                _record(moved, sg, mid, b, p1)
                graph_edit.remove_ops(sg, {i1, i2})
                return 2
    return 0


def _cancel_pair(
    model: Any,
    pair: tuple[int, int],
    readers: dict[int, list[int]],
    writer: dict[int, int],
    outputs: set[int],
    moved: Moved,
    p2: list[int],
) -> int:
    """x ─T1→ a ─T2→ b with T2∘T1 = id: bypass T2, and drop T1 once nothing reads a."""
    sg = model.subgraphs[0]
    i1, i2 = pair
    x = int(sg.operators[i1].inputs[0])
    a, b = int(sg.operators[i2].inputs[0]), int(sg.operators[i2].outputs[0])
    if b in outputs:
        # b must keep its name and index as a graph output: let x's producer write b instead.
        i_x = writer.get(x)
        if i_x is None or x in outputs or b in {int(t) for t in sg.inputs}:
            return 0
        px = sg.operators[i_x]
        px.outputs = np.asarray([b if t == x else t for t in px.outputs], dtype=np.int32)
        graph_edit.replace_input(sg, x, b, op_indices=readers[x])
        _record(moved, sg, x, b, list(range(len(p2))))
    else:
        graph_edit.replace_input(sg, b, x, op_indices=readers[b])
        _record(moved, sg, b, x, list(range(len(p2))))
    drop = {i2}
    if len(readers[a]) == 1 and a not in outputs:
        drop.add(i1)
        _record(moved, sg, a, int(sg.operators[i1].inputs[0]), inverse(p2))
    graph_edit.remove_ops(sg, drop)
    return len(drop)


def inverse(p: list[int]) -> list[int]:
    """The permutation q with p[q[i]] = i, i.e. the transpose that undoes transpose(·, p)."""
    q = [0] * len(p)
    for i, v in enumerate(p):
        q[v] = i
    return q


def _per_channel(sg: Any, *tensors: int) -> bool:
    """True if any tensor has per-channel quantization (its channel axis would move)."""
    for t in tensors:
        q = sg.tensors[t].quantization
        if q is not None and q.scale is not None and len(q.scale) > 1:
            return True
    return False


def _record(moved: Moved, sg: Any, old: int, new: int, perm: list[int]) -> None:
    old_name = tflite_io.tensor_name(sg.tensors[old])
    new_name = tflite_io.tensor_name(sg.tensors[new])
    if old_name != new_name:
        moved[old_name] = (new_name, tuple(perm))
