"""Fold a constant bias ADD into the TRANSPOSE_CONV before it.

onnx2tf 2.6.9 lowers ConvTranspose with a bias as TRANSPOSE_CONV → ADD(bias). The tensor
between them has no counterpart in the ONNX graph (ConvTranspose includes its bias), so an
integer model has no scale for it and would leave the op in float. TRANSPOSE_CONV takes the bias
as its fourth input (operator version 3); one op is also faster than two.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bridge.lower import tflite_graph
from bridge.runtime import tflite_io

TRANSPOSE_CONV_BIAS_VERSION = 3


def fold_transpose_conv_bias(model: Any) -> int:
    """Fold every TRANSPOSE_CONV → ADD(constant [C]) pair; return how many were folded."""
    sg = model.subgraphs[0]
    folded = 0
    while True:
        pair = _next_pair(model)
        if pair is None:
            if folded:
                tflite_graph.prune_tensors(model)
            return folded
        conv_i, add_i, bias = pair
        conv, add = sg.operators[conv_i], sg.operators[add_i]
        conv.inputs = np.asarray([*(int(t) for t in conv.inputs[:3]), bias], dtype=np.int32)
        conv.outputs[0] = add.outputs[0]
        tflite_graph.opcode_index(model, "TRANSPOSE_CONV", version=TRANSPOSE_CONV_BIAS_VERSION)
        tflite_graph.remove_ops(sg, {add_i})
        folded += 1


def _next_pair(model: Any) -> tuple[int, int, int] | None:
    sg = model.subgraphs[0]
    readers = tflite_graph.consumers(sg)
    graph_out = {int(t) for t in sg.outputs}
    for i, op in enumerate(sg.operators):
        if tflite_io.op_name(model, op) != "TRANSPOSE_CONV":
            continue
        if len(op.inputs) > 3 and int(op.inputs[3]) >= 0:
            continue
        out = int(op.outputs[0])
        users = readers.get(out, [])
        if len(users) != 1 or out in graph_out:
            continue
        add = sg.operators[users[0]]
        if tflite_io.op_name(model, add) != "ADD" or _fused(add):
            continue
        other = [int(t) for t in add.inputs if int(t) != out]
        if len(other) != 1:
            continue
        bias = tflite_io.buffer_array(model, sg.tensors[other[0]])
        channels = int(sg.tensors[out].shape[-1])
        if bias is None or bias.size != channels or bias.dtype.kind != "f":
            continue
        if list(sg.tensors[other[0]].shape) != [channels]:
            flat = tflite_graph.add_tensor(
                model,
                f"{tflite_io.tensor_name(sg.tensors[out])}_bias",
                [channels],
                bias.dtype,
                data=bias.reshape(channels),
            )
            return i, users[0], flat
        return i, users[0], other[0]
    return None


def _fused(op: Any) -> bool:
    opts = op.builtinOptions
    return bool(getattr(opts, "fusedActivationFunction", 0)) if opts is not None else False
