"""Give chosen .tflite inputs and outputs a channel-last layout by adding boundary transposes.

onnx2tf is run with every input's shape kept as in ONNX, so the .tflite starts out with exactly
the ONNX (channel-first) I/O. For `nhwc=True` this module then rewrites the flatbuffer:

    input  x [N,H,W,C] ─TRANSPOSE(0,3,1,2)→ x__channel_first [N,C,H,W] → (the converted graph)
    (graph) → y__channel_first [N,C,H,W] ─TRANSPOSE(0,2,3,1)→ output y [N,H,W,C]

and `transposes.cancel_transposes` removes each added transpose that meets an inverse one that
onnx2tf put in front of or behind its channel-last kernels, so a conv net ends up transposing
nothing at its boundary. Doing this on the flatbuffer rather than by adding ONNX Transpose nodes
keeps the layout under our control: onnx2tf 2.6.9 was seen dropping an ONNX output Transpose on
a 3-D (NCW) output.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from bridge.errors import LoweringError
from bridge.lower import tflite_graph
from bridge.runtime import tflite_io

#: The highest rank TFLite's TRANSPOSE takes.
MAX_PERM_RANK = 6


def channel_last_perm(rank: int) -> list[int]:
    """The perm taking a channel-first tensor of `rank` to channel-last: (0, 2, ..., r-1, 1)."""
    return [0, *range(2, rank), 1]


def channel_first_perm(rank: int) -> list[int]:
    """The perm taking a channel-last tensor of `rank` to channel-first: (0, r-1, 1, ..., r-2)."""
    return [0, rank - 1, *range(1, rank - 1)]


def to_channel_last_io(model: Any, inputs: Iterable[str], outputs: Iterable[str]) -> None:
    """Make the named graph inputs and outputs channel-last in place (names are kept).

    Raises:
        LoweringError: a named tensor is not a graph input/output, or has rank below 3.
    """
    sg = model.subgraphs[0]
    by_name = {tflite_io.tensor_name(sg.tensors[t]): int(t) for t in sg.inputs}
    new_ops = []
    for name in inputs:
        idx = _lookup(by_name, name, "input")
        rank = _rank(sg, idx)
        inner = _rename_inner(sg, idx)
        outer = _permuted_copy(model, idx, name, channel_last_perm(rank))
        new_ops.append(tflite_graph.transpose_op(model, outer, inner, channel_first_perm(rank)))
        sg.inputs = np.asarray([outer if t == inner else t for t in sg.inputs], dtype=np.int32)
    sg.operators = new_ops + list(sg.operators)

    by_name = {tflite_io.tensor_name(sg.tensors[t]): int(t) for t in sg.outputs}
    for name in outputs:
        idx = _lookup(by_name, name, "output")
        perm = channel_last_perm(_rank(sg, idx))
        inner = _rename_inner(sg, idx)
        outer = _permuted_copy(model, idx, name, perm)
        sg.operators.append(tflite_graph.transpose_op(model, inner, outer, perm))
        sg.outputs = np.asarray([outer if t == inner else t for t in sg.outputs], dtype=np.int32)
    _retarget_signatures(model)


def restore_channel_first_outputs(model: Any, contract: Any) -> list[str]:
    """Transpose back outputs onnx2tf left channel-last although the contract is channel-first.

    Even with every input shape kept, onnx2tf 2.6.9 sometimes returns a 4-D output (after
    Resize or ConvTranspose, say) in NHWC. An output whose shape is exactly the channel-last
    permutation of its channel-first contract shape gets a TRANSPOSE back. A square shape that
    hides the permutation is not guessed at: parity catches it and the conversion fails.
    Returns the names of the outputs fixed.
    """
    sg = model.subgraphs[0]
    by_name = {tflite_io.tensor_name(sg.tensors[t]): int(t) for t in sg.outputs}
    fixed = []
    for spec in contract.outputs:
        idx = by_name.get(spec.name)
        if idx is None or spec.rank < 3 or not spec.layout.startswith("NC"):
            continue
        shape = [int(d) for d in sg.tensors[idx].shape]
        want = list(spec.concrete_shape())
        last = [want[p] for p in channel_last_perm(spec.rank)]
        if shape == want or shape != last:
            continue
        perm = channel_first_perm(spec.rank)
        inner = _rename_inner(sg, idx)
        outer = _permuted_copy(model, idx, spec.name, perm)
        sg.operators.append(tflite_graph.transpose_op(model, inner, outer, perm))
        sg.outputs = np.asarray([outer if t == inner else t for t in sg.outputs], dtype=np.int32)
        fixed.append(spec.name)
    _retarget_signatures(model)
    return fixed


def restore_permuted_outputs(model: Any, contract: Any) -> dict[str, list[int]]:
    """Transpose back outputs whose shape is a permutation of the contract's.

    onnx2tf 2.6.9 sometimes drops the Transpose (or chain of them) that produces a graph output
    (`y.transpose(1, 2)` after a Linear on [N, T, F], `x.permute(0, 3, 1, 2)` on an image) and
    returns the tensor before it, in the ONNX layout or its own channel-last one. When exactly
    one data order fits (`output_perm`), a TRANSPOSE restores the contract's shape; otherwise
    the output is left for `io_contract.check_io` to report. Parity checks the result.

    Returns:
        {output name: perm of the TRANSPOSE added}.
    """
    sg = model.subgraphs[0]
    by_name = {tflite_io.tensor_name(sg.tensors[t]): int(t) for t in sg.outputs}
    fixed = {}
    for spec in contract.outputs:
        idx = by_name.get(spec.name)
        if idx is None:
            continue
        perm = output_perm([int(d) for d in sg.tensors[idx].shape], list(spec.concrete_shape()))
        if perm is None:
            continue
        transpose_output(model, idx, spec.name, perm)
        fixed[spec.name] = perm
    _retarget_signatures(model)
    return fixed


def transpose_output(model: Any, idx: int, name: str, perm: list[int]) -> None:
    """Make graph output tensor `idx` (named `name`) a TRANSPOSE by `perm` of what it held."""
    sg = model.subgraphs[0]
    inner = _rename_inner(sg, idx, "__onnx2tf_layout")
    outer = _permuted_copy(model, idx, name, perm)
    sg.operators.append(tflite_graph.transpose_op(model, inner, outer, perm))
    sg.outputs = np.asarray([outer if t == inner else t for t in sg.outputs], dtype=np.int32)
    _retarget_signatures(model)


def output_perm(got: Sequence[int], want: Sequence[int]) -> list[int] | None:
    """The perm p with got[p[i]] = want[i], when `got` ≠ `want` and one data order fits.

    Axes of size 1 carry no data, so perms that differ only in where they put them are one
    data order. None when the shapes are equal, not permutations of each other, of rank above
    `MAX_PERM_RANK`, or when repeated sizes let several data orders fit (a [1, 4, 4, 3] output
    for a [1, 3, 4, 4] contract could come from either NHWC or NWHC).
    """
    if list(got) == list(want) or sorted(got) != sorted(want) or len(got) > MAX_PERM_RANK:
        return None
    orders: dict[tuple[int, ...], list[int]] = {}
    for p in itertools.permutations(range(len(got))):
        if all(got[p[i]] == w for i, w in enumerate(want)):
            order = tuple(a for a in p if got[a] != 1)
            orders.setdefault(order, list(p))
    if len(orders) != 1:
        return None
    return next(iter(orders.values()))


def _lookup(by_name: dict[str, int], name: str, kind: str) -> int:
    if name not in by_name:
        raise LoweringError(
            f"cannot make {kind} {name!r} channel-last: the .tflite has no {kind} of that name "
            f"(it has {sorted(by_name)})"
        )
    return by_name[name]


def _rank(sg: Any, idx: int) -> int:
    rank = len(sg.tensors[idx].shape)
    if rank < 3:
        name = tflite_io.tensor_name(sg.tensors[idx])
        raise LoweringError(f"cannot make {name!r} channel-last: it has rank {rank}, not 3 to 5")
    return rank


def _rename_inner(sg: Any, idx: int, suffix: str = "__channel_first") -> int:
    """Rename the boundary tensor to `<name><suffix>`; it becomes graph-internal."""
    t = sg.tensors[idx]
    t.name = f"{tflite_io.tensor_name(t)}{suffix}"
    return idx


def _permuted_copy(model: Any, idx: int, name: str, perm: list[int]) -> int:
    """A new activation tensor `name` shaped like tensor `idx` permuted by `perm`."""
    t = model.subgraphs[0].tensors[idx]
    sig = tflite_graph.shape_of(t)
    return tflite_graph.add_tensor(
        model,
        name,
        [int(t.shape[p]) for p in perm],
        tflite_io.TENSOR_DTYPES[t.type],
        shape_signature=[sig[p] for p in perm],
    )


def _retarget_signatures(model: Any) -> None:
    """Point signature entries at the current graph inputs/outputs of the same name."""
    sg = model.subgraphs[0]
    index = {tflite_io.tensor_name(sg.tensors[t]): int(t) for t in [*sg.inputs, *sg.outputs]}
    for sig in model.signatureDefs or []:
        for tm in list(sig.inputs or []) + list(sig.outputs or []):
            name = tm.name.decode() if isinstance(tm.name, bytes) else tm.name
            if name in index:
                tm.tensorIndex = index[name]
