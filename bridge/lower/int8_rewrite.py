"""Write the plan into the flatbuffer: integer tensor types, quantized constants, and
QUANTIZE/DEQUANTIZE at the model boundary and around operators kept float.

Weights become symmetric int8 with the QDQ model's per-channel scales along the TFLite
output-channel axis (CONV_2D OHWI → 0, DEPTHWISE_CONV_2D 1HWC → 3, FULLY_CONNECTED [O, I] → 0,
TRANSPOSE_CONV OHWI → 0). The float weights onnx2tf wrote are the dequantized QDQ weights, so
q = w / s[c] is an integer and is recovered exactly. Biases become int32 (int64 for int16
activations) with scale s_in · s_w[c], which is what the kernels assume.

Each activation may exist in up to three physical forms: integer (int8/int16), float32, and
uint8 (only at the model boundary). The producer writes one form; every other form some reader
needs is made right after it by one QUANTIZE or DEQUANTIZE.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bridge.errors import LoweringError
from bridge.lower import int8_kernels, tflite_io
from bridge.lower.int8_assign import ActQ, Plan
from bridge.lower.int8_graph import Graph, quantization
from bridge.lower.int8_match import match_channels, match_constant
from bridge.lower.int8_qdq import QdqModel

log = logging.getLogger(__name__)

_TYPE = {"float": 0, "int8": 9, "int16": 7, "uint8": 3, "int32": 2, "int64": 4}
#: A recovered integer weight may sit this far from an integer (float32 rounding of q·s).
_INT_TOL = 1e-3


@dataclass
class Rewrite:
    """What was written, for the artifact's facts."""

    computed_qparams: list[dict[str, str]] = field(default_factory=list)
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
    weights = _onnx_weights(qdq)
    consts = _onnx_constants(qdq)
    cache: dict[tuple, int] = {}
    for op in graph.ops:
        if id(op) in plan.integer_ops:
            _quantize_constants(graph, op, plan, weights, consts, cache, out, act_dtype)
    _activations(graph, plan, act_dtype=act_dtype, io_dtype=io_dtype, out=out)
    _set_versions(graph, plan, act_dtype)
    return out


# ---- constants ----------------------------------------------------------------------------------
def _onnx_weights(qdq: QdqModel) -> dict[str, tuple[np.ndarray, int, Any]]:
    from onnx import numpy_helper

    out = {}
    for init in qdq.float_model.graph.initializer:
        qp = qdq.constants.get(init.name)
        if qp is not None and qp.per_channel:
            out[init.name] = (numpy_helper.to_array(init), int(qp.axis), qp)
    return out


def _onnx_constants(qdq: QdqModel) -> dict[str, tuple[np.ndarray, Any]]:
    from onnx import numpy_helper

    out = {}
    for init in qdq.float_model.graph.initializer:
        qp = qdq.constants.get(init.name)
        if qp is not None and not qp.per_channel:
            out[init.name] = (numpy_helper.to_array(init), qp)
    return out


def _quantize_constants(
    graph: Graph,
    op: Any,
    plan: Plan,
    weights: dict,
    consts: dict,
    cache: dict[tuple, int],
    out: Rewrite,
    act_dtype: str,
) -> None:
    op_type = graph.op_type(op)
    k = int8_kernels.kernel(op_type)
    if k is None:
        return
    w_scales: np.ndarray | None = None
    if k.weight is not None:
        pos, axis = k.weight
        w_idx = int(op.inputs[pos])
        if graph.constant(w_idx) is not None and graph.tensor(w_idx).type == 0:
            key = ("w", w_idx)
            if key not in cache:
                cache[key] = _weight(graph, w_idx, axis, weights, consts, out)
            op.inputs[pos] = cache[key]
        q = graph.tensor(int(op.inputs[pos])).quantization
        w_scales = None if q is None else np.asarray(q.scale, np.float64)
    for pos, t in enumerate(op.inputs):
        t = int(t)
        if t < 0 or graph.tensor(t).type != 0 or graph.constant(t) is None:
            continue
        if k.bias is not None and pos == k.bias and w_scales is not None:
            s_in = plan.qparams[int(op.inputs[_data_input(op_type)])].scale
            key = ("b", t, s_in, w_scales.tobytes())
            if key not in cache:
                cache[key] = _bias(graph, t, s_in * w_scales, act_dtype)
        else:
            qp = plan.qparams[int(op.outputs[0])] if k.same_scale else None
            key = ("c", t, qp)
            if key not in cache:
                cache[key] = _constant(graph, t, qp, consts, out, act_dtype)
        op.inputs[pos] = cache[key]


def _data_input(op_type: str) -> int:
    """Index of the activation input whose scale multiplies the weight scale."""
    return 2 if op_type == "TRANSPOSE_CONV" else 0


def _weight(
    graph: Graph, idx: int, axis: int, weights: dict, consts: dict, out: Rewrite
) -> int:
    w = graph.constant(idx).astype(np.float64)
    name = graph.name(idx)
    found = match_channels(w, axis, {k: (v, a) for k, (v, a, _) in weights.items()})
    if found is not None:
        qp = weights[found][2]
        scale = np.asarray(qp.scale, np.float64)
    else:
        per_tensor = match_constant(w, {k: v for k, (v, _) in consts.items()})
        if per_tensor is not None:
            qp = consts[per_tensor][1]
            scale = np.asarray(qp.scale, np.float64)
        else:
            qp = None
            scale = np.max(np.abs(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)), 1) / 127
            scale = np.where(scale > 0, scale, 1.0)
            out.computed_qparams.append(
                {"tensor": name, "reason": "weight matches no QDQ weight; symmetric max/127"}
            )
    if qp is not None and (qp.dtype != "int8" or np.any(qp.zero_point != 0)):
        raise LoweringError(
            f"weight {name!r} is quantized as {qp.dtype} with zero points "
            f"{qp.zero_point[:4].tolist()}...; TFLite needs symmetric int8 weights (zero point 0)"
        )
    shape = [1] * w.ndim
    shape[axis] = -1
    s = scale.reshape(shape) if scale.size > 1 else scale.reshape(())
    q = w / s
    err = float(np.max(np.abs(q - np.round(q)))) if q.size else 0.0
    if qp is not None and err > _INT_TOL:
        raise LoweringError(
            f"weight {name!r} is not a multiple of its QDQ scales (off by {err:.3g} steps); "
            "the float lowering changed the weight values"
        )
    q = np.clip(np.round(q), -127, 127).astype(np.int8)
    new = graph.add_tensor(
        name, graph.tensor(idx).shape, _TYPE["int8"], data=q, quant=quantization(
            scale.astype(np.float32), np.zeros(scale.size, np.int64), axis=axis
        )
    )
    return new


def _bias(graph: Graph, idx: int, scale: np.ndarray, act_dtype: str) -> int:
    b = graph.constant(idx).astype(np.float64)
    s = np.broadcast_to(scale.astype(np.float32).astype(np.float64), b.shape)
    safe = np.where(s > 0, s, 1.0)
    dtype = np.int64 if act_dtype == "int16" else np.int32
    info = np.iinfo(dtype)
    q = np.clip(np.round(b / safe), info.min, info.max).astype(dtype)
    quant = quantization(s.astype(np.float32), np.zeros(b.size, np.int64), axis=0)
    code = _TYPE["int64"] if act_dtype == "int16" else _TYPE["int32"]
    return graph.add_tensor(graph.name(idx), graph.tensor(idx).shape, code, data=q, quant=quant)


def _constant(
    graph: Graph, idx: int, qp: ActQ | None, consts: dict, out: Rewrite, act_dtype: str
) -> int:
    value = graph.constant(idx).astype(np.float64)
    name = graph.name(idx)
    if qp is None:
        found = match_constant(value, {k: v for k, (v, _) in consts.items()})
        if found is not None:
            p = consts[found][1]
            qp = ActQ(float(p.scale[0]), int(p.zero_point[0]))
            if p.dtype != act_dtype:
                qp = None
    if qp is None:
        qp = _computed(value, act_dtype)
        out.computed_qparams.append(
            {"tensor": name, "reason": "constant operand matches no QDQ constant; min/max"}
        )
    info = np.iinfo(np.dtype(act_dtype))
    q = np.clip(np.round(value / qp.scale) + qp.zero_point, info.min, info.max)
    return graph.add_tensor(
        name,
        graph.tensor(idx).shape,
        _TYPE[act_dtype],
        data=q.astype(act_dtype),
        quant=quantization([qp.scale], [qp.zero_point]),
    )


def _computed(value: np.ndarray, act_dtype: str) -> ActQ:
    """Per-tensor parameters covering `value` and 0: asymmetric int8, symmetric int16."""
    lo, hi = min(float(value.min()), 0.0), max(float(value.max()), 0.0)
    if act_dtype == "int16":
        return ActQ(max(abs(lo), abs(hi)) / 32767 or 1.0, 0)
    scale = (hi - lo) / 255 or 1.0
    return ActQ(scale, int(np.clip(round(-128 - lo / scale), -128, 127)))


# ---- activations --------------------------------------------------------------------------------
def _activations(graph: Graph, plan: Plan, *, act_dtype: str, io_dtype: str, out: Rewrite) -> None:
    io_kind = {"float32": "float", "uint8": "uint8"}.get(io_dtype, "int")
    producers = graph.producers()
    consumers = graph.consumers()
    graph_in, graph_out = set(graph.inputs), set(graph.outputs)
    before: list[Any] = []  # conversions of graph inputs, run first
    after: dict[int, list[Any]] = {}  # id(producer) → conversions right after it
    for t, qp in sorted(plan.qparams.items()):
        if not graph.is_float_activation(t):
            continue
        prod = producers.get(t)
        readers = consumers.get(t, [])
        int_readers = [op for op in readers if id(op) in plan.integer_ops]
        float_readers = [op for op in readers if id(op) not in plan.integer_ops]
        is_io = t in graph_in or t in graph_out
        if prod is None and t not in graph_in:
            continue
        if prod is None:
            made = io_kind
        else:
            made = "int" if id(prod) in plan.integer_ops else "float"
        needed = {made}
        needed |= {"int"} if int_readers else set()
        needed |= {"float"} if float_readers else set()
        needed |= {io_kind} if t in graph_out else set()
        if needed == {"float"}:
            continue
        own = io_kind if is_io else ("int" if "int" in needed else "float")
        phys = {own: t}
        for kind in sorted(needed - {own}):
            phys[kind] = graph.add_tensor(
                f"{graph.name(t)}_{_kind_dtype(kind, act_dtype)}",
                graph.tensor(t).shape,
                0,
                like=t,
            )
        for kind, idx in phys.items():
            _retype(graph, idx, kind, qp, act_dtype)
        if "int" in phys:
            out.integer_twin[t] = phys["int"]
        if prod is not None:
            prod.outputs = np.asarray(
                [phys[made] if o == t else o for o in prod.outputs], np.int32
            )
        graph.replace_input(t, phys.get("int", t), only=int_readers)
        graph.replace_input(t, phys.get("float", t), only=float_readers)
        convs = [
            _conversion(graph, phys[made], phys[kind], made, kind, act_dtype)
            for kind in sorted(needed - {made})
        ]
        out.conversions += len(convs)
        (before if prod is None else after.setdefault(id(prod), [])).extend(convs)
    ops = list(before)
    for op in graph.ops:
        ops.append(op)
        ops.extend(after.get(id(op), []))
    graph.ops = ops


def _kind_dtype(kind: str, act_dtype: str) -> str:
    return {"int": act_dtype, "float": "float32", "uint8": "uint8"}[kind]


def _retype(graph: Graph, idx: int, kind: str, qp: ActQ, act_dtype: str) -> None:
    t = graph.tensor(idx)
    if kind == "float":
        t.type, t.quantization = 0, None
    elif kind == "uint8":
        t.type, t.quantization = _TYPE["uint8"], quantization([qp.scale], [qp.zero_point + 128])
    else:
        t.type, t.quantization = _TYPE[act_dtype], quantization([qp.scale], [qp.zero_point])


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
        k = int8_kernels.kernel(graph.op_type(op))
        version = None if k is None else (k.int8 if act_dtype == "int8" else k.int16)
        if version is not None:
            graph.set_version(op, version)


def tensor_types(graph: Graph) -> dict[str, str]:
    """Tensor name → numpy dtype name, for reports and tests."""
    return {
        graph.name(i): str(tflite_io.TENSOR_DTYPES.get(t.type, t.type))
        for i, t in enumerate(graph.sg.tensors)
    }
