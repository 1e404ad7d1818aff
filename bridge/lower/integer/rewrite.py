"""Write the plan into the flatbuffer: integer activations, quantized constants
(`constants`), and QUANTIZE/DEQUANTIZE at the model boundary and around float operators.

Each activation may exist in up to three physical forms: integer (int8/int16), float32, and
uint8 (only at the model boundary). The producer writes one form; every other form some reader
needs is made right after it by one QUANTIZE or DEQUANTIZE.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bridge.lower.integer import kernels
from bridge.lower.integer.assign import ActQ, Plan
from bridge.lower.integer.constants import TYPE_CODES, ConstantWriter
from bridge.lower.integer.linear import FC_KEEP_DIMS_VERSION
from bridge.lower.integer.qdq import QdqModel
from bridge.lower.tflite_graph import Graph, quantization
from bridge.runtime import tflite_io

log = logging.getLogger(__name__)


@dataclass
class Rewrite:
    """What was written, for the artifact's facts."""

    computed_qparams: list[dict[str, str]] = field(default_factory=list)
    rescaled_weights: list[dict[str, Any]] = field(default_factory=list)
    conversions: int = 0
    integer_twin: dict[int, int] = field(default_factory=dict)


def materialize(
    graph: Graph,
    plan: Plan,
    qdq: QdqModel,
    *,
    act_dtype: str,
    io_dtype: str,
) -> Rewrite:
    """Apply `plan` to `graph` (in place). `io_dtype` is "float32", "uint8" or `act_dtype`."""
    out = Rewrite()
    constants = ConstantWriter(graph, qdq, act_dtype=act_dtype)
    for op in graph.ops:
        if id(op) in plan.integer_ops:
            constants.quantize_inputs(op, plan)
    out.computed_qparams = constants.computed
    out.rescaled_weights = constants.rescaled
    if io_dtype == "float32":
        out.conversions += _round_float_outputs(graph, plan, act_dtype)
    _activations(graph, plan, act_dtype=act_dtype, io_dtype=io_dtype, out=out)
    _set_versions(graph, plan, act_dtype)
    return out


# ---- activations --------------------------------------------------------------------------------
def _activations(graph: Graph, plan: Plan, *, act_dtype: str, io_dtype: str, out: Rewrite) -> None:
    io_kind = {"float32": "float", "uint8": "uint8"}.get(io_dtype, "int")
    producers = graph.producers()
    consumers = graph.consumers()
    graph_in, graph_out = set(graph.inputs), set(graph.outputs)
    before: list[Any] = []  # conversions of graph inputs, run first
    after: dict[int, list[Any]] = {}  # id(producer) → conversions right after it
    for t, qp in sorted(plan.qparams.items()):
        prod = producers.get(t)
        if not graph.is_float_activation(t) or (prod is None and t not in graph_in):
            continue
        readers = consumers.get(t, [])
        int_readers = [op for op in readers if id(op) in plan.integer_ops]
        float_readers = [op for op in readers if id(op) not in plan.integer_ops]
        made = io_kind if prod is None else "int" if id(prod) in plan.integer_ops else "float"
        needed = {made, *(["int"] if int_readers else []), *(["float"] if float_readers else [])}
        needed |= {io_kind} if t in graph_out else set()
        if needed == {"float"}:
            continue
        # The tensor keeps its index (and name) in the form the outside world or the integer
        # graph sees; every other form is a new tensor.
        own = io_kind if t in graph_in | graph_out else "int" if "int" in needed else "float"
        forms = {own: t}
        for kind in sorted(needed - {own}):
            name = f"{graph.name(t)}_{_kind_dtype(kind, act_dtype)}"
            forms[kind] = graph.add_tensor(name, graph.tensor(t).shape, 0, like=t)
        for kind, idx in forms.items():
            _retype(graph, idx, kind, qp, act_dtype)
        if "int" in forms:
            out.integer_twin[t] = forms["int"]
        if prod is not None:
            prod.outputs = np.asarray(
                [forms[made] if o == t else o for o in prod.outputs], np.int32
            )
        graph.replace_input(t, forms.get("int", t), only=int_readers)
        graph.replace_input(t, forms.get("float", t), only=float_readers)
        convs = [
            _conversion(graph, forms[made], forms[kind], made, kind, act_dtype)
            for kind in sorted(needed - {made})
        ]
        out.conversions += len(convs)
        (before if prod is None else after.setdefault(id(prod), [])).extend(convs)
    ops = list(before)
    for op in graph.ops:
        ops.append(op)
        ops.extend(after.get(id(op), []))
    graph.ops = ops


def _round_float_outputs(graph: Graph, plan: Plan, act_dtype: str) -> int:
    """Float-op outputs that the QDQ model quantizes go through their integer form: the
    producer writes a fresh float tensor, QUANTIZE makes the integer one (which integer readers
    take) and DEQUANTIZE writes the graph output. Returns the number of conversions added."""
    producers = graph.producers()
    added = 0
    for t in graph.outputs:
        prod = producers.get(t)
        qp = plan.qparams.get(t)
        if prod is None or qp is None or id(prod) in plan.integer_ops:
            continue
        raw = graph.add_tensor(f"{graph.name(t)}_float32", graph.tensor(t).shape, 0, like=t)
        integer = graph.add_tensor(f"{graph.name(t)}_{act_dtype}", graph.tensor(t).shape, 0, like=t)
        _retype(graph, integer, "int", qp, act_dtype)
        prod.outputs = np.asarray([raw if o == t else o for o in prod.outputs], np.int32)
        readers = graph.consumers().get(t, [])
        graph.replace_input(t, integer, only=[op for op in readers if id(op) in plan.integer_ops])
        graph.replace_input(t, raw, only=[op for op in readers if id(op) not in plan.integer_ops])
        convs = [
            _conversion(graph, raw, integer, "float", "int", act_dtype),
            _conversion(graph, integer, t, "int", "float", act_dtype),
        ]
        at = graph.ops.index(prod) + 1
        graph.ops[at:at] = convs
        added += len(convs)
    return added


def _kind_dtype(kind: str, act_dtype: str) -> str:
    return {"int": act_dtype, "float": "float32", "uint8": "uint8"}[kind]


def _retype(graph: Graph, idx: int, kind: str, qp: ActQ, act_dtype: str) -> None:
    t = graph.tensor(idx)
    if kind == "float":
        t.type, t.quantization = 0, None
    elif kind == "uint8":
        t.type, t.quantization = (
            TYPE_CODES["uint8"],
            quantization([qp.scale], [qp.zero_point + 128]),
        )
    else:
        t.type, t.quantization = TYPE_CODES[act_dtype], quantization([qp.scale], [qp.zero_point])


def _conversion(
    graph: Graph, src: int, dst: int, src_kind: str, dst_kind: str, act_dtype: str
) -> Any:
    if dst_kind == "float":
        version = {"int8": 2, "int16": 3}.get(act_dtype, 1) if src_kind == "int" else 1
        return graph.new_op("DEQUANTIZE", [src], [dst], version)
    version = 2 if dst_kind == "int" and act_dtype == "int16" else 1
    return graph.new_op("QUANTIZE", [src], [dst], version)


def _set_versions(graph: Graph, plan: Plan, act_dtype: str) -> None:
    for op in graph.ops:
        if id(op) not in plan.integer_ops:
            continue
        k = kernels.kernel(graph.op_type(op))
        version = None if k is None else (k.int8 if act_dtype == "int8" else k.int16)
        if getattr(op.builtinOptions, "keepNumDims", False) and version is not None:
            version = max(version, FC_KEEP_DIMS_VERSION)
        if version is not None:
            graph.set_version(op, version)


def tensor_types(graph: Graph) -> dict[str, str]:
    """Tensor name → numpy dtype name, for reports and tests."""
    return {
        graph.name(i): str(tflite_io.TENSOR_DTYPES.get(t.type, t.type))
        for i, t in enumerate(graph.sg.tensors)
    }
