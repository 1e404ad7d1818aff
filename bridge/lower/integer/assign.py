"""Give every TFLite activation the scale and zero point the QDQ model gave its ONNX twin,
decide which operators run integer, and check the result against LiteRT's kernels.

1. A TFLite tensor holding the values of a quantized ONNX tensor takes its parameters.
2. Tensors that hold no ONNX tensor (the outputs of inserted TRANSPOSE/PAD/RESHAPE, ...) take
   them through scale-keeping operators: forward from the input, then backward from the output,
   repeated until nothing changes; fixed-output operators (LOGISTIC, SOFTMAX, TANH) take their
   fixed parameters.
3. An operator runs integer when LiteRT has an integer kernel for it and every float tensor it
   touches has parameters; otherwise it stays float32, with the reason recorded.
4. Integer operators are checked against their kernel's constraints (same scale in and out,
   fixed output parameters, zero zero-point for int16). A violation is a bug in the QDQ model:
   it is reported as an error, never patched by changing a scale.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bridge.errors import LoweringError
from bridge.lower.integer import kernels
from bridge.lower.integer.qdq import QdqModel
from bridge.lower.tflite_graph import Graph

log = logging.getLogger(__name__)

#: Two scales are "equal" when they differ by at most this fraction (the kernels compare the
#: float32 scales; the quantizer writes the same float32 value into both tensors).
SCALE_RTOL = 1e-6


@dataclass(frozen=True)
class ActQ:
    """Per-tensor parameters of one activation: real = (q − zero_point) · scale."""

    scale: float
    zero_point: int

    def same(self, other: ActQ) -> bool:
        return self.zero_point == other.zero_point and abs(self.scale - other.scale) <= (
            SCALE_RTOL * max(self.scale, other.scale)
        )


@dataclass
class Plan:
    """What the lowering decided for each tensor and operator of the main subgraph.

    Attributes:
        qparams: tensor index → its activation parameters.
        source: tensor index → the ONNX tensor its parameters came from.
        matched: tensor indices that hold some ONNX tensor (quantized or not); only the others
            take parameters by propagation, so a tensor the QDQ model left float stays float.
        integer_ops: ids (`id(op)`) of operators that run integer.
        float_ops: [{"op", "tensor", "reason"}] for operators kept float32.
    """

    qparams: dict[int, ActQ] = field(default_factory=dict)
    source: dict[int, str] = field(default_factory=dict)
    matched: set[int] = field(default_factory=set)
    integer_ops: set[int] = field(default_factory=set)
    float_ops: list[dict[str, str]] = field(default_factory=list)


def assign(
    graph: Graph,
    matches: Mapping[int, list[str]],
    qdq: QdqModel,
    *,
    act_dtype: str,
    onnx_order: Mapping[str, int],
) -> Plan:
    """Steps 1-3: parameters for every activation, and the integer/float split."""
    plan = Plan()
    for idx, names in matches.items():
        if not graph.is_float_activation(idx):
            continue
        plan.matched.add(idx)
        chosen = _choose(graph.name(idx), names, qdq, onnx_order)
        if chosen is None:
            continue
        qp = qdq.activations[chosen]
        if qp.dtype != act_dtype:
            raise LoweringError(
                f"tensor {chosen!r} is quantized as {qp.dtype} in the QDQ model but the mode "
                f"needs {act_dtype} activations; quantize the model for this mode"
            )
        plan.qparams[idx] = ActQ(float(qp.scale[0]), int(qp.zero_point[0]))
        plan.source[idx] = chosen
    _propagate(graph, plan, act_dtype)
    _split(graph, plan, act_dtype)
    return plan


def _choose(
    tfl_name: str, names: list[str], qdq: QdqModel, onnx_order: Mapping[str, int]
) -> str | None:
    """Among ONNX tensors with the same values, the one whose parameters this tensor takes.

    Equal values usually mean a value-preserving chain (Identity, Reshape) whose tensors share
    parameters anyway. Otherwise prefer the same name, then the latest tensor in ONNX order:
    TFLite elides value-preserving ops, so its tensor stands for the end of the chain.
    """
    quantized = [n for n in names if n in qdq.activations]
    if not quantized:
        return None
    first = qdq.activations[quantized[0]]
    if all(
        np.array_equal(qdq.activations[n].scale, first.scale)
        and np.array_equal(qdq.activations[n].zero_point, first.zero_point)
        for n in quantized
    ):
        return quantized[0]
    if tfl_name in quantized:
        return tfl_name
    chosen = max(quantized, key=lambda n: onnx_order.get(n, -1))
    log.warning(
        "TFLite tensor %r holds the values of %s, quantized differently; using %r",
        tfl_name,
        quantized,
        chosen,
    )
    return chosen


def _propagate(graph: Graph, plan: Plan, act_dtype: str) -> None:
    """Step 2: through scale-keeping ops (both directions) and from fixed-output ops."""
    q = plan.qparams

    def free(t: int) -> bool:
        return t not in q and t not in plan.matched

    changed = True
    while changed:
        changed = False
        for op in graph.ops:
            k = kernels.kernel(graph.op_type(op))
            if k is None:
                continue
            acts = [t for t in (*op.inputs, *op.outputs) if graph.is_float_activation(int(t))]
            outs = [int(t) for t in op.outputs if graph.is_float_activation(int(t))]
            if k.fixed_output and act_dtype in k.fixed_output:
                fixed = ActQ(*k.fixed_output[act_dtype])
                for t in outs:
                    if free(t):
                        q[t] = fixed
                        changed = True
            if not k.same_scale:
                continue
            known = [q[int(t)] for t in acts if int(t) in q]
            if not known:
                continue
            for t in acts:
                if free(int(t)):
                    q[int(t)] = known[0]
                    changed = True


def _split(graph: Graph, plan: Plan, act_dtype: str) -> None:
    """Step 3: integer where a kernel exists and every float tensor has parameters."""
    for op in graph.ops:
        op_type = graph.op_type(op)
        floats = [int(t) for t in (*op.inputs, *op.outputs) if t >= 0 and graph.tensor(t).type == 0]
        if not floats:
            continue
        reason = kernels.float_reason(op_type, act_dtype)
        missing = [t for t in floats if graph.is_float_activation(t) and t not in plan.qparams]
        if reason is None and missing:
            reason = "no quantization parameters for this tensor in the QDQ model"
        if reason is None:
            reason = _zero_point_reason(graph, op, plan)
        if reason is None:
            plan.integer_ops.add(id(op))
            continue
        where = graph.name(missing[0]) if missing else graph.name(int(op.outputs[0]))
        plan.float_ops.append({"op": op_type, "tensor": where, "reason": reason})


def _zero_point_reason(graph: Graph, op: Any, plan: Plan) -> str | None:
    k = kernels.kernel(graph.op_type(op))
    for pos in k.zero_point_free if k else ():
        t = int(op.inputs[pos]) if pos < len(op.inputs) else -1
        if t in plan.qparams and plan.qparams[t].zero_point != 0:
            return (
                f"LiteRT's integer {graph.op_type(op)} is only right when input {pos} has zero "
                f"point 0 (it has {plan.qparams[t].zero_point}); quantize it symmetrically"
            )
    return None


def check(graph: Graph, plan: Plan, *, act_dtype: str) -> None:
    """Step 4: raise LoweringError listing every integer op whose kernel rejects its scales."""
    problems: list[str] = []
    for op in graph.ops:
        if id(op) not in plan.integer_ops:
            continue
        op_type = graph.op_type(op)
        k = kernels.kernel(op_type)
        if k is None:  # integer ops all have kernels
            continue
        acts = [int(t) for t in (*op.inputs, *op.outputs) if graph.is_float_activation(int(t))]
        out = int(op.outputs[0])
        if act_dtype == "int16":
            problems += [
                f"{op_type} tensor {graph.name(t)!r} has zero point {plan.qparams[t].zero_point}"
                "; int16 activations must be symmetric (zero point 0)"
                for t in acts
                if plan.qparams[t].zero_point != 0
            ]
        if k.fixed_output and act_dtype in k.fixed_output:
            want = ActQ(*k.fixed_output[act_dtype])
            if not plan.qparams[out].same(want):
                problems.append(
                    f"{op_type} output {graph.name(out)!r} has scale "
                    f"{plan.qparams[out].scale:.9g}, zero point {plan.qparams[out].zero_point}; "
                    f"LiteRT's kernel requires {want.scale:.9g}, {want.zero_point}"
                )
        if k.same_scale:
            ref = plan.qparams[out] if graph.is_float_activation(out) else None
            for t in acts:
                if ref is not None and not plan.qparams[t].same(ref):
                    problems.append(
                        f"{op_type} keeps scale, but {graph.name(t)!r} has "
                        f"({plan.qparams[t].scale:.9g}, {plan.qparams[t].zero_point}) and its "
                        f"output {graph.name(out)!r} has ({ref.scale:.9g}, {ref.zero_point})"
                    )
    if problems:
        listing = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise LoweringError(
            f"the QDQ model's scales break {len(problems)} TFLite integer kernel rule(s):\n  "
            f"{listing}{more}\nThis is a quantizer bug: it must follow bridge.quantize.rules."
        )
