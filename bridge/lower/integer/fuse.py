"""Graph clean-ups around quantization: fold RELU/RELU6 into the operator before them, and
drop transposes that a following reduction makes pointless.

onnx2tf leaves a ReLU after a convolution as its own operator; in an integer model that is an
extra pass over memory and an extra requantization. Folding it into the producer's
`fused_activation_function` is exact in float, and in integer the kernel clamps to the fused
range inside its own requantization (the intermediate tensor, and its rounding, disappear).

The activation may sit behind layout ops (CONV_2D → TRANSPOSE → RELU6 where onnx2tf returns to
NCHW before the Clip): an elementwise clamp commutes with moving elements, so the producer takes
the activation and the layout ops then write the activation's output. The producer writes a
fresh tensor, which holds no ONNX tensor and so takes its scale back through the layout ops.
"""

from __future__ import annotations

import numpy as np

from bridge.lower.tflite_graph import Graph

#: TFLite ActivationFunctionType per activation operator that can be fused.
_FUSED_CODES = {"RELU": 1, "RELU_N1_TO_1": 2, "RELU6": 3}
#: Producers whose options carry `fusedActivationFunction` and whose kernels apply it.
_PRODUCERS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "SUB", "MUL"})
#: Ops that only move elements, which a clamp commutes with.
_LAYOUT = frozenset({"TRANSPOSE", "RESHAPE", "SQUEEZE", "EXPAND_DIMS"})


def fuse_activations(graph: Graph) -> int:
    """Fold RELU, RELU6 and RELU_N1_TO_1 into a single-consumer producer; return the count."""
    fused = 0
    for op in list(graph.ops):
        code = _FUSED_CODES.get(graph.op_type(op))
        if code is not None and _fuse_one(graph, op, code):
            fused += 1
    return fused


def _fuse_one(graph: Graph, act: object, code: int) -> bool:
    consumers = graph.consumers()
    producers = graph.producers()
    chain = []  # layout ops between producer and activation, nearest first
    src = int(act.inputs[0])  # type: ignore[attr-defined]
    while True:
        prod = producers.get(src)
        if prod is None or len(consumers[src]) != 1 or src in graph.outputs:
            return False
        kind = graph.op_type(prod)
        if kind in _LAYOUT:
            chain.append(prod)
            src = int(prod.inputs[0])
            continue
        break
    if kind not in _PRODUCERS or getattr(prod.builtinOptions, "fusedActivationFunction", 1) != 0:
        return False
    dst = int(act.outputs[0])  # type: ignore[attr-defined]
    prod.builtinOptions.fusedActivationFunction = code
    if chain:
        # Every tensor between producer and activation now holds clamped values: make them
        # fresh so that none keeps the pre-activation ONNX twin it was matched to.
        prev = _fresh(graph, src)
        prod.outputs = np.asarray([prev], np.int32)
        for layout in reversed(chain):
            layout.inputs = np.asarray([prev, *layout.inputs[1:]], np.int32)
            prev = dst if layout is chain[0] else _fresh(graph, int(layout.outputs[0]))
            layout.outputs = np.asarray([prev], np.int32)
    else:
        prod.outputs = np.asarray([dst], np.int32)
    graph.ops.remove(act)
    return True


def _fresh(graph: Graph, like: int) -> int:
    return graph.add_tensor(f"{graph.name(like)}_fused", graph.tensor(like).shape, 0, like=like)


#: Reductions whose input layout does not matter once their axes follow the transpose.
_REDUCERS = frozenset({"MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD"})


def fold_transposes_into_reductions(graph: Graph, integer_ops: set[int]) -> int:
    """Drop a TRANSPOSE whose only reader is a reduction that keeps no reduced axes.

    y = reduce(transpose(x, p), axes) equals reduce(x, p[axes]) when the kept axes appear in
    the same order in x and in transpose(x, p): onnx2tf's NHWC → NCHW transpose before a
    global mean (axes 2, 3) is then a mean over axes 1, 2 of the NHWC tensor. Run it after
    scales are assigned: the transpose keeps scale, so its input already has the right ones.
    Only pairs that both run integer (ids in `integer_ops`) are folded.
    """
    folded = 0
    consumers = graph.consumers()
    producers = graph.producers()
    for red in list(graph.ops):
        if graph.op_type(red) not in _REDUCERS or getattr(red.builtinOptions, "keepDims", True):
            continue
        src = int(red.inputs[0])
        tr = producers.get(src)
        axes = graph.constant(int(red.inputs[1]))
        if tr is None or graph.op_type(tr) != "TRANSPOSE" or axes is None:
            continue
        if id(tr) not in integer_ops or id(red) not in integer_ops:
            continue
        perm = graph.constant(int(tr.inputs[1]))
        if perm is None or len(consumers[src]) != 1 or src in graph.outputs:
            continue
        perm = [int(p) for p in perm.ravel()]
        reduced = sorted({int(a) % len(perm) for a in axes.ravel()})
        kept = [perm[i] for i in range(len(perm)) if i not in reduced]
        if kept != sorted(kept):
            continue
        new_axes = np.asarray(sorted(perm[a] for a in reduced), np.int32)
        axes_idx = graph.add_tensor(
            f"{graph.name(int(red.inputs[1]))}_folded", new_axes.shape, 2, data=new_axes
        )
        red.inputs = np.asarray([int(tr.inputs[0]), axes_idx], np.int32)
        graph.ops.remove(tr)
        folded += 1
    return folded
