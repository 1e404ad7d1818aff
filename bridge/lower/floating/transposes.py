"""Cancel TRANSPOSE pairs that undo each other, directly or across unary elementwise ops.

Three rewrites, applied until nothing changes:

    cancel:  x ─T(p1)→ a ─T(p2)→ b      with p1∘p2 = id   ⇒  readers of b read x
    sink:    x ─T(p)→ a ─U→ u                             ⇒  x ─U→ u' ─T(p)→ u
    reduce:  x ─T(p)→ a ─MEAN(axes A)→ y   (keep_dims off)  ⇒  x ─MEAN(axes p[A])→ y

Applying p1 then p2 gives out[i] = x[p1[p2[i]]], so the pair is the identity when
p1[p2[i]] = i for every i. U is an op that maps each element on its own (RELU, LOGISTIC, ...),
so it commutes with a transpose; sinking T(p) below U (never more ops) lets `cancel` or
`reduce` remove it. A reduction that drops axes A of transpose(x, p) drops axes p[A] of x, and
the kept axes come out in the same order when p restricted to them is increasing: a global
average pool over NCHW axes (2, 3) after NHWC→NCHW is a mean over NHWC axes (1, 2), which
XNNPACK also runs much faster. These patterns appear where onnx2tf's channel-last kernels meet a
channel-first graph boundary, and where `layout.py` adds channel-last boundary transposes.

Vanished tensors are reported in `Moved` by object identity (names get reused by `layout.py`):
old tensor → (surviving tensor, perm), meaning old = transpose(surviving, perm).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from bridge.lower import tflite_graph
from bridge.runtime import tflite_io

log = logging.getLogger(__name__)

#: Ops that act on each element independently (one data input, one output, per-tensor params).
UNARY_ELEMENTWISE = frozenset(
    {
        "ABS", "CAST", "CEIL", "COS", "ELU", "EXP", "FLOOR", "GELU", "HARD_SWISH", "LEAKY_RELU",
        "LOG", "LOGISTIC", "NEG", "RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1", "ROUND",
        "RSQRT", "SIGN", "SIN", "SQRT", "SQUARE", "TANH",
    }
)  # fmt: skip


#: Reductions with (input, constant axes) and ReducerOptions.keepDims.
REDUCTIONS = frozenset({"MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD", "REDUCE_ANY"})


class Moved:
    """Where vanished tensors went: old = transpose(new, perm), keyed by tensor object."""

    def __init__(self) -> None:
        self._moves: dict[int, tuple[Any, Any, tuple[int, ...]]] = {}

    def add(self, old: Any, new: Any, perm: list[int] | tuple[int, ...]) -> None:
        if old is not new:
            self._moves[id(old)] = (old, new, tuple(perm))

    def get(self, tensor: Any) -> tuple[Any, tuple[int, ...]] | None:
        """(new tensor, perm) if `tensor` vanished, else None."""
        entry = self._moves.get(id(tensor))
        if entry is None or entry[0] is not tensor:
            return None
        return entry[1], entry[2]

    def __len__(self) -> int:
        return len(self._moves)


def cancel_transposes(model: Any, moved: Moved | None = None) -> tuple[int, Moved]:
    """Remove inverse TRANSPOSE pairs from the main subgraph in place.

    Returns:
        (number of TRANSPOSE ops removed, where vanished tensors went).
    """
    moved = moved if moved is not None else Moved()
    removed = 0
    for _ in range(10 * len(model.subgraphs[0].operators) + 10):  # each step shrinks or sinks
        step = _cancel_once(model, moved)
        if step is None:
            break
        removed += step
    if removed:
        tflite_graph.prune_tensors(model)
        log.debug("cancelled %d TRANSPOSE ops", removed)
    return removed, moved


def inverse(p: list[int] | tuple[int, ...]) -> list[int]:
    """The permutation q with p[q[i]] = i, i.e. the transpose that undoes transpose(·, p)."""
    q = [0] * len(p)
    for i, v in enumerate(p):
        q[v] = i
    return q


def _perm(model: Any, op: Any) -> list[int] | None:
    if len(op.inputs) < 2:
        return None
    value = tflite_graph.const_array(model, int(op.inputs[1]))
    return None if value is None else [int(v) for v in value.ravel()]


def _is_inverse(p1: list[int] | None, p2: list[int] | None) -> bool:
    if p1 is None or p2 is None or len(p1) != len(p2):
        return False
    return all(p1[p2[i]] == i for i in range(len(p1)))


class _View:
    """One snapshot of the subgraph's wiring, rebuilt after each rewrite."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.sg = model.subgraphs[0]
        self.readers = tflite_graph.consumers(self.sg)
        self.writer = tflite_graph.producers(self.sg)
        self.outputs = {int(t) for t in self.sg.outputs}
        self.inputs = {int(t) for t in self.sg.inputs}
        self.names = [tflite_io.op_name(model, op) for op in self.sg.operators]
        self.perms = [
            _perm(model, op) if n == "TRANSPOSE" else None
            for n, op in zip(self.names, self.sg.operators, strict=True)
        ]


def _cancel_once(model: Any, moved: Moved) -> int | None:
    """Apply one rewrite; return the TRANSPOSE ops it removed, or None if none applies."""
    v = _View(model)
    for i2, p2 in enumerate(v.perms):
        if p2 is None:
            continue
        i1 = v.writer.get(int(v.sg.operators[i2].inputs[0]))
        if i1 is not None and _is_inverse(v.perms[i1], p2):
            removed = _cancel(v, i1, i2, moved)
            if removed:
                return removed
    for i1, p1 in enumerate(v.perms):
        if p1 is not None and _sink(v, i1, p1, moved):
            return 0
    for i1, p1 in enumerate(v.perms):
        if p1 is not None and (removed := _fold_into_reduction(v, i1, p1, moved)) is not None:
            return removed
    return None


def _cancel(v: _View, i1: int, i2: int, moved: Moved) -> int:
    """x ─T1→ a ─T2→ b with T2∘T1 = id: readers of b read x; T1 goes once nothing reads a."""
    sg = v.sg
    x, a = int(sg.operators[i1].inputs[0]), int(sg.operators[i1].outputs[0])
    b = int(sg.operators[i2].outputs[0])
    if b in v.outputs:
        # b is a graph output and keeps its index: let x's producer write b instead.
        i_x = v.writer.get(x)
        if i_x is None or x in v.outputs:
            return 0
        px = sg.operators[i_x]
        px.outputs = np.asarray([b if t == x else t for t in px.outputs], dtype=np.int32)
        tflite_graph.replace_input(sg, x, b, op_indices=v.readers[x])
        moved.add(sg.tensors[x], sg.tensors[b], range(len(sg.tensors[b].shape)))
        x = b
    else:
        tflite_graph.replace_input(sg, b, x, op_indices=v.readers[b])
        moved.add(sg.tensors[b], sg.tensors[x], range(len(sg.tensors[x].shape)))
    drop = {i2}
    if len(v.readers[a]) == 1 and a not in v.outputs:
        drop.add(i1)
        moved.add(sg.tensors[a], sg.tensors[x], v.perms[i1] or [])
    tflite_graph.remove_ops(sg, drop)
    return len(drop)


def _sink(v: _View, i1: int, p1: list[int], moved: Moved) -> bool:
    """x ─T1→ a ─U→ u: make it x ─U→ u' ─T1→ u (same op count; T1 moves towards its match)."""
    sg = v.sg
    x, a = int(sg.operators[i1].inputs[0]), int(sg.operators[i1].outputs[0])
    if a in v.outputs or len(v.readers[a]) != 1:
        return False
    iu = v.readers[a][0]
    u_op = sg.operators[iu]
    if v.names[iu] not in UNARY_ELEMENTWISE or int(u_op.inputs[0]) != a:
        return False
    u = int(u_op.outputs[0])
    if _per_channel(sg, a, u):
        return False
    src, dst = sg.tensors[x], sg.tensors[u]
    u_new = tflite_graph.add_tensor(
        v.model,
        f"{tflite_io.tensor_name(dst)}__pre_transpose",
        [int(d) for d in src.shape],
        tflite_io.TENSOR_DTYPES[dst.type],
        shape_signature=tflite_graph.shape_of(src),
    )
    sg.tensors[u_new].quantization = dst.quantization
    u_op.inputs = np.asarray([x, *u_op.inputs[1:]], dtype=np.int32)
    u_op.outputs = np.asarray([u_new], dtype=np.int32)
    t1 = sg.operators[i1]
    t1.inputs = np.asarray([u_new, *t1.inputs[1:]], dtype=np.int32)
    t1.outputs = np.asarray([u], dtype=np.int32)
    sg.operators[i1], sg.operators[iu] = u_op, t1  # keep topological order: U, then T1
    moved.add(sg.tensors[a], src, p1)
    return True


def _fold_into_reduction(v: _View, i1: int, p1: list[int], moved: Moved) -> int | None:
    """x ─T(p)→ a ─R(axes A, keep_dims off)→ y: let R read x with axes p[A] (kept axes ordered).

    Returns the TRANSPOSE ops removed (0 or 1), or None if no reader of a could be rewired.
    """
    sg = v.sg
    x, a = int(sg.operators[i1].inputs[0]), int(sg.operators[i1].outputs[0])
    rank = len(p1)
    rewired = 0
    for j in v.readers[a]:
        op = sg.operators[j]
        if v.names[j] not in REDUCTIONS or int(op.inputs[0]) != a or len(op.inputs) < 2:
            continue
        if op.builtinOptions is None or op.builtinOptions.keepDims:
            continue
        axes = tflite_graph.const_array(v.model, int(op.inputs[1]))
        if axes is None or _per_channel(sg, a):
            continue
        reduced = {int(ax) % rank for ax in axes.ravel()}
        kept = [p1[i] for i in range(rank) if i not in reduced]
        if kept != sorted(kept):
            continue
        new_axes = sorted(p1[i] for i in reduced)
        axes_name = f"{tflite_io.tensor_name(sg.tensors[int(op.outputs[0])])}_axes"
        axes_idx = tflite_graph.add_tensor(
            v.model, axes_name, [len(new_axes)], np.dtype(np.int32), data=np.array(new_axes)
        )
        op.inputs = np.asarray([x, axes_idx, *op.inputs[2:]], dtype=np.int32)
        rewired += 1
    if not rewired:
        return None
    if len(v.readers[a]) == rewired and a not in v.outputs:
        moved.add(sg.tensors[a], sg.tensors[x], p1)
        tflite_graph.remove_ops(sg, {i1})
        return 1
    return 0


def _per_channel(sg: Any, *tensors: int) -> bool:
    """True if any tensor has per-channel quantization (its channel axis would move)."""
    for t in tensors:
        q = sg.tensors[t].quantization
        if q is not None and q.scale is not None and len(q.scale) > 1:
            return True
    return False
