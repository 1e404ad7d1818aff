"""Write a MatMul with a constant matrix as FULLY_CONNECTED, as TFLite's converter writes a
Linear layer, and fold the bias ADD after it into the operator.

onnx2tf emits `BATCH_MATMUL(x, W)` for ONNX MatMul(x, W) with a constant W [K, N], and an ADD
for the bias. An integer BATCH_MATMUL takes per-tensor weights and no bias, so the product
would be rounded before the bias is added. `FULLY_CONNECTED(x, Wᵀ, b)` with `keep_num_dims`
maps [..., K] to [..., N] with per-channel int8 weights [N, K] and an int32 bias of scale
s_in·s_w, which is what the quantizer's "matmul_bias" pattern models (no rounding between the
product and the bias). The rewrite is exact in float.

The bias ADD is folded only when the QDQ model does not quantize the product (its ONNX twin is
not a quantized activation): otherwise the QDQ model rounds there and TFLite must too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from bridge.lower.integer.qdq import QdqModel
from bridge.lower.tflite_graph import Graph

#: TFLite's FULLY_CONNECTED version for keep_num_dims (tensorflow/lite/tools/versioning).
FC_KEEP_DIMS_VERSION = 5


def linearize(graph: Graph, matches: Mapping[int, list[str]], qdq: QdqModel) -> int:
    """Rewrite every BATCH_MATMUL with a constant 2-D right operand; return the count.

    Args:
        graph: the float lowering, edited in place.
        matches: TFLite tensor index → the ONNX tensors holding its values (`match`).
        qdq: the QDQ model (which tensors it quantizes).
    """
    count = 0
    for op in list(graph.ops):
        if graph.op_type(op) != "BATCH_MATMUL" or len(op.inputs) != 2:
            continue
        y = int(op.inputs[1])
        w = graph.constant(y)
        opts = op.builtinOptions
        if w is None or w.ndim != 2 or graph.tensor(y).type != 0 or getattr(opts, "adjX", False):
            continue
        weight = np.ascontiguousarray(w if getattr(opts, "adjY", False) else w.T)  # [N, K]
        w_idx = graph.add_tensor(f"{graph.name(y)}_fc", weight.shape, 0, data=weight)
        out = int(op.outputs[0])
        add, bias = _bias_add(graph, out, weight.shape[0], matches, qdq)
        fc = graph.new_op(
            "FULLY_CONNECTED", [int(op.inputs[0]), w_idx, -1], [out], FC_KEEP_DIMS_VERSION
        )
        fc.builtinOptions.keepNumDims = True
        if add is not None and bias is not None:
            fc.inputs = np.asarray([int(op.inputs[0]), w_idx, bias], np.int32)
            fc.outputs = np.asarray([int(add.outputs[0])], np.int32)
            fc.builtinOptions.fusedActivationFunction = add.builtinOptions.fusedActivationFunction
            graph.ops.remove(add)
        graph.ops[graph.ops.index(op)] = fc
        count += 1
    return count


def _bias_add(
    graph: Graph, out: int, channels: int, matches: Mapping[int, list[str]], qdq: QdqModel
) -> tuple[Any, int | None]:
    """The ADD of a constant [channels] vector that alone reads `out`, and that vector (as a
    1-D tensor), when it can be folded; else (None, None)."""
    readers = graph.consumers().get(out, [])
    if len(readers) != 1 or out in graph.outputs or graph.op_type(readers[0]) != "ADD":
        return None, None
    if any(name in qdq.activations for name in matches.get(out, [])):
        return None, None  # the QDQ model rounds the product: TFLite must too
    add = readers[0]
    other = [int(t) for t in add.inputs if int(t) != out]
    if len(other) != 1 or len(add.inputs) != 2:
        return None, None
    b = graph.constant(other[0])
    if b is None or graph.tensor(other[0]).type != 0 or b.size != channels:
        return None, None
    if any(d != 1 for d in b.shape[:-1]) or list(graph.tensor(int(add.outputs[0])).shape) != list(
        graph.tensor(out).shape
    ):
        return None, None
    flat = np.ascontiguousarray(b.reshape(-1))
    return add, graph.add_tensor(graph.name(other[0]), flat.shape, 0, data=flat)
