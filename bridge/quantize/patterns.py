"""Find the node chains of `rules.FUSED_PATTERNS` that the lowering emits as one TFLite op.

The QDQ model has to compute what TFLite computes. Where the lowering turns several ONNX nodes
into one TFLite operator, TFLite rounds only that operator's output, so the quantizer puts QDQ
on the chain's input and output and none on the tensors inside (`Match.internal`).

- gelu_erf: Div(x, √2) → Erf → Add(1) → Mul(x, ·) → Mul(0.5), each intermediate read once and
  not a graph output; the same test as onnx2tf's `_fuse_gelu_erf_chain`, so both sides agree on
  which chains become GELU.
- matmul_bias: MatMul(x, W) → Add(b), W a constant float 2-D matrix [K, N], b a constant float
  vector of N values, the product read only by the Add and not a graph output.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx

from bridge.quantize.rules import FUSED_PATTERNS, FusedPattern

#: onnx2tf's tolerances for the GELU constants (√2: 1e-4, 1 and 0.5: 1e-5).
_GELU_CONSTANTS = ((np.sqrt(2.0), 1e-4), (1.0, 1e-5), (0.5, 1e-5))
_BY_NAME = {p.name: p for p in FUSED_PATTERNS}


@dataclass(frozen=True)
class Match:
    """One occurrence of a fused pattern.

    Attributes:
        pattern: the pattern.
        nodes: the chain's node indices, input side first; the last one writes `output`.
        data: the activation input of the fused operator.
        output: the fused operator's output.
        internal: tensors inside the chain (no QDQ).
        weight: the constant weight (matmul_bias), else None.
        bias: the constant bias (matmul_bias), else None.
    """

    pattern: FusedPattern
    nodes: tuple[int, ...]
    data: str
    output: str
    internal: tuple[str, ...]
    weight: str | None = None
    bias: str | None = None

    def to_dict(self, names: list[str]) -> dict[str, object]:
        """JSON form for facts, with node names."""
        return {
            "pattern": self.pattern.name,
            "tflite_op": self.pattern.tflite_op,
            "nodes": [names[i] for i in self.nodes],
            "output": self.output,
            "reason": self.pattern.reason,
        }


def find_patterns(graph: onnx.GraphProto, consts: Mapping[str, np.ndarray]) -> list[Match]:
    """Every non-overlapping match of the fused patterns in `graph`, in graph order."""
    readers: dict[str, list[int]] = defaultdict(list)
    for i, node in enumerate(graph.node):
        for t in node.input:
            if t:
                readers[t].append(i)
    outputs = {o.name for o in graph.output}
    ctx = _Context(graph, consts, readers, outputs)
    matches: list[Match] = []
    used: set[int] = set()
    for i in range(len(graph.node)):
        for match in (_gelu_erf(ctx, i), _matmul_bias(ctx, i)):
            if match is not None and not used.intersection(match.nodes):
                matches.append(match)
                used.update(match.nodes)
    return sorted(matches, key=lambda m: m.nodes[-1])


@dataclass(frozen=True)
class _Context:
    graph: onnx.GraphProto
    consts: Mapping[str, np.ndarray]
    readers: Mapping[str, list[int]]
    outputs: set[str]

    def node(self, i: int) -> onnx.NodeProto:
        return self.graph.node[i]

    def only_reader(self, tensor: str, op_type: str) -> int | None:
        """The single node reading `tensor` if it has type `op_type` (and `tensor` is not a
        graph output), else None."""
        users = self.readers.get(tensor, [])
        if len(users) != 1 or tensor in self.outputs:
            return None
        return users[0] if self.graph.node[users[0]].op_type == op_type else None

    def scalar(self, tensor: str) -> float | None:
        """The value of a constant whose elements are all equal, else None."""
        value = self.consts.get(tensor)
        if value is None or value.size == 0:
            return None
        flat = np.asarray(value, np.float64).ravel()
        return float(flat[0]) if np.all(flat == flat[0]) else None

    def other(self, node: onnx.NodeProto, tensor: str) -> str | None:
        """The input of a binary node that is not `tensor`."""
        ins = list(node.input)
        if len(ins) != 2 or tensor not in ins:
            return None
        return ins[1] if ins[0] == tensor else ins[0]


def _near(value: float | None, target: float, tol: float) -> bool:
    return value is not None and abs(value - target) <= tol


def _gelu_erf(ctx: _Context, i: int) -> Match | None:
    div = ctx.node(i)
    if div.op_type != "Div" or len(div.input) != 2:
        return None
    x, (sqrt2, one, half) = div.input[0], _GELU_CONSTANTS
    if not _near(ctx.scalar(div.input[1]), *sqrt2):
        return None
    chain = [i]
    erf = ctx.only_reader(div.output[0], "Erf")
    if erf is None:
        return None
    chain.append(erf)
    add = ctx.only_reader(ctx.node(erf).output[0], "Add")
    if add is None:
        return None
    c = ctx.other(ctx.node(add), ctx.node(erf).output[0])
    if c is None or not _near(ctx.scalar(c), *one):
        return None
    chain.append(add)
    mul = ctx.only_reader(ctx.node(add).output[0], "Mul")
    if mul is None or ctx.other(ctx.node(mul), ctx.node(add).output[0]) != x:
        return None
    chain.append(mul)
    mul2 = ctx.only_reader(ctx.node(mul).output[0], "Mul")
    if mul2 is None:
        return None
    c = ctx.other(ctx.node(mul2), ctx.node(mul).output[0])
    if c is None or not _near(ctx.scalar(c), *half):
        return None
    chain.append(mul2)
    internal = tuple(ctx.node(k).output[0] for k in chain[:-1])
    return Match(_BY_NAME["gelu_erf"], tuple(chain), x, ctx.node(mul2).output[0], internal)


def _matmul_bias(ctx: _Context, i: int) -> Match | None:
    mm = ctx.node(i)
    if mm.op_type != "MatMul" or len(mm.input) != 2:
        return None
    w = ctx.consts.get(mm.input[1])
    if w is None or w.dtype != np.float32 or w.ndim != 2:
        return None
    add = ctx.only_reader(mm.output[0], "Add")
    if add is None:
        return None
    b_name = ctx.other(ctx.node(add), mm.output[0])
    b = ctx.consts.get(b_name) if b_name else None
    if b is None or b.dtype != np.float32 or b.shape != (w.shape[1],):
        return None
    return Match(
        _BY_NAME["matmul_bias"],
        (i, add),
        mm.input[0],
        ctx.node(add).output[0],
        (mm.output[0],),
        weight=mm.input[1],
        bias=b_name,
    )
