"""Fuse MatMul with a constant 2-D weight and an Add of a constant bias into Gemm.

    Add(MatMul(A, W), c)  →  Gemm(A, W, c)       (α = β = 1, no transposes)

Conditions: A has rank 2 (Gemm is 2-D only; 3-D `[batch, time, features]` MatMuls are left
alone), W is a 2-D constant, c is a constant that broadcasts unidirectionally to the [M, N]
result (so the Add output has the MatMul's shape), the MatMul output is read by the Add only,
and the dtype is floating point. Gemm computes the same sum of products plus the same bias.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import onnx
import onnx_ir as ir

from bridge.passes import _ir
from bridge.passes.base import PassResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Match:
    add: ir.Node
    matmul: ir.Node
    bias: ir.Value


def fuse_matmul_add(model: onnx.ModelProto) -> PassResult:
    """Turn every eligible MatMul + Add pair into one Gemm."""
    irm = _ir.load(model)
    count = 0
    for node in list(irm.graph):
        if not _ir.is_onnx_op(node, "Add"):
            continue
        match = _match(node)
        if isinstance(match, str):
            log.debug("Add %r not fused: %s", node.name, match)
            continue
        _rewrite(irm.graph, match)
        count += 1
    return _ir.finish(model, irm, count)


def _match(add: ir.Node) -> _Match | str:
    """The MatMul and bias to fuse, or the reason the fusion does not apply."""
    if len(add.inputs) != 2 or None in add.inputs:
        return "malformed Add"
    reasons = []
    for y, c in (add.inputs, add.inputs[::-1]):
        reason = _check(y, c)
        if reason is None:
            return _Match(add, y.producer(), c)  # type: ignore[arg-type]
        reasons.append(reason)
    return "; ".join(reasons)


def _check(y: ir.Value, c: ir.Value) -> str | None:
    matmul = y.producer()
    if matmul is None or not _ir.is_onnx_op(matmul, "MatMul"):
        return "operand is not a MatMul output"
    if _ir.sole_reader(y) is None:
        return "MatMul output has other readers"
    a, w = matmul.inputs
    weight = _ir.const_array(w)
    if weight is None or weight.ndim != 2 or weight.dtype.kind != "f":
        return "MatMul weight is not a 2-D float constant"
    if _ir.rank(a) != 2:
        return "MatMul input is not known to be 2-D"
    bias = _ir.const_array(c)
    if bias is None or bias.dtype != weight.dtype:
        return "other operand is not a constant of the weight's dtype"
    m_dim = a.shape[0] if a.shape is not None else None  # type: ignore[index]
    if not _broadcasts_to(bias.shape, (m_dim, weight.shape[1])):
        return f"bias shape {bias.shape} does not broadcast to [M, {weight.shape[1]}]"
    return None


def _broadcasts_to(shape: tuple[int, ...], target: tuple[object, int]) -> bool:
    """Whether `shape` broadcasts to `target` without enlarging it (an unknown M needs 1)."""
    if len(shape) > 2:
        return False
    return all(d == 1 or d == t for d, t in zip(shape[::-1], target[::-1], strict=False))


def _rewrite(graph: ir.Graph, m: _Match) -> None:
    a, w = m.matmul.inputs
    gemm = ir.Node("", "Gemm", [a, w, m.bias], name=m.matmul.name or m.add.name)
    graph.insert_before(m.add, gemm)
    _ir.splice(graph, [m.add, m.matmul], m.add.outputs[0], gemm.outputs[0], take_name=True)
