"""Int8 storage for the constants of float operators in an integer model ("weight-only").

The quantizer keeps some linear layers float on int8 weights (`bridge.quantize.rules`
WEIGHT_ONLY_OPS) and stores the tables of float Gathers int8 (INT8_TABLE_OPS): in the QDQ
model their float node reads a DequantizeLinear of an int8 constant. The float lowering wrote
those dequantized values as float32 constants. Here each such constant of a float operator (a
filter, or a GATHER's table) becomes the int8 tensor with the QDQ scales, read through one
DEQUANTIZE to float32: the file holds int8, and the float kernel computes with exactly the QDQ
model's values (LiteRT evaluates a DEQUANTIZE of a constant once and keeps the result).

Only constants that match a per-channel QDQ weight are stored this way; other float operators
keep their float32 constants.
"""

from __future__ import annotations

import logging
from typing import Any

from bridge.lower.integer import kernels
from bridge.lower.integer.assign import Plan
from bridge.lower.integer.constants import ConstantWriter
from bridge.lower.tflite_graph import Graph

log = logging.getLogger(__name__)

#: DEQUANTIZE versions (tensorflow/lite/tools/versioning/op_version.cc): int8 input, and int8
#: per-channel input.
DEQUANTIZE_INT8_VERSION = 2
DEQUANTIZE_PER_CHANNEL_VERSION = 5
#: Float operators whose constant input (index, channel axis of the TFLite layout) may be an
#: int8 QDQ constant, besides the weights of `kernels` (a GATHER's table, one scale a row).
TABLES = {"GATHER": (0, 0)}


def store_int8_weights(graph: Graph, plan: Plan, constants: ConstantWriter) -> list[dict[str, Any]]:
    """Point each float operator's float32 filter that is a dequantized QDQ weight at an int8
    copy through a DEQUANTIZE (in place). Returns [{"op", "tensor"}] for the facts."""
    done: dict[int, int] = {}
    stored: list[dict[str, Any]] = []
    for op in list(graph.ops):
        if id(op) in plan.integer_ops:
            continue
        op_type = graph.op_type(op)
        k = kernels.kernel(op_type)
        where = TABLES.get(op_type) or (k.weight if k is not None else None)
        if where is None:
            continue
        pos, axis = where
        w_idx = int(op.inputs[pos]) if pos < len(op.inputs) else -1
        if w_idx < 0 or graph.tensor(w_idx).type != 0 or not graph.is_constant(w_idx):
            continue
        if w_idx not in done:
            w = graph.constant(w_idx)
            if w is None or not constants.is_qdq_weight(w, axis):
                continue
            done[w_idx] = _dequantized(graph, constants.weight(w_idx, axis))
        op.inputs[pos] = done[w_idx]
        stored.append({"op": op_type, "tensor": graph.name(w_idx)})
    if stored:
        log.info("%d float operators compute on int8-stored weights", len(stored))
    return stored


def _dequantized(graph: Graph, q_idx: int) -> int:
    """A float32 tensor made from int8 constant `q_idx` by a DEQUANTIZE at the graph's start."""
    q = graph.tensor(q_idx)
    out = graph.add_tensor(f"{graph.name(q_idx)}_dequantized", q.shape, 0)
    per_channel = q.quantization is not None and len(q.quantization.scale) > 1
    version = DEQUANTIZE_PER_CHANNEL_VERSION if per_channel else DEQUANTIZE_INT8_VERSION
    graph.ops.insert(0, graph.new_op("DEQUANTIZE", [q_idx], [out], version))
    return out
