"""Integer modes: the TFLite tensors of a float recurrent layer stay float32.

LSTM, GRU and RNN stay float in the QDQ model (bridge/quantize/rules.py), but onnx2tf unrolls
them into ordinary tensors (`recurrent.py`) that the value matcher and scale propagation would
quantize: a step's hidden state equals a slice of Y, so every step's state was rounded to Y's
scale (a 2-layer encoder fell from 40 to 15 dB). `float_interior` names those tensors, and the
layer's outputs too where the QDQ model hands them unquantized to a float reader (the next
layer reads Y itself, not its Q/DQ copy, so a value outside the calibrated range must not be
clipped on that path).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import onnx

RECURRENT_OPS = ("LSTM", "GRU", "RNN")
_QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def float_interior(graph: Any, qdq_model: onnx.ModelProto) -> set[int]:
    """TFLite tensors of `graph` that belong to a float recurrent layer of `qdq_model`.

    For each recurrent node: the tensors reached walking back from its outputs (found by name)
    to its inputs (through any Q/DQ pair in front of them), neither included; plus each output
    that a node other than QuantizeLinear reads. A node whose walk escapes to a graph input (a
    boundary tensor was renamed) contributes nothing.

    Args:
        graph: the `tflite_graph.Graph` of the float TFLite lowered from the QDQ float graph.
        qdq_model: the QDQ model.
    """
    by_name = {graph.name(i): i for i in range(len(graph.sg.tensors))}
    producers = graph.producers()
    onnx_producers = {o: n for n in qdq_model.graph.node for o in n.output}
    readers: dict[str, list[str]] = defaultdict(list)
    for n in qdq_model.graph.node:
        for i in n.input:
            readers[i].append(n.op_type)
    found: set[int] = set()
    for node in qdq_model.graph.node:
        if node.op_type not in RECURRENT_OPS:
            continue
        outputs = [o for o in node.output if o in by_name]
        sources = (_before_qdq(i, onnx_producers) for i in node.input if i)
        stops = {by_name[s] for s in sources if s in by_name}
        inside = _walk_back([by_name[o] for o in outputs], stops, producers, graph)
        if inside is None:
            continue
        found |= inside - {by_name[o] for o in outputs}
        found |= {by_name[o] for o in outputs if set(readers[o]) - {"QuantizeLinear"}}
    return found


def _before_qdq(name: str, producers: dict[str, onnx.NodeProto]) -> str:
    """The tensor a chain of QuantizeLinear/DequantizeLinear nodes ending in `name` starts from."""
    node = producers.get(name)
    while node is not None and node.op_type in _QDQ_OPS:
        name = node.input[0]
        node = producers.get(name)
    return name


def _walk_back(
    ends: list[int], stops: set[int], producers: dict[int, Any], graph: Any
) -> set[int] | None:
    """Tensors between `stops` and `ends`, or None if the walk reaches a graph input."""
    seen: set[int] = set()
    todo = list(ends)
    while todo:
        t = todo.pop()
        if t in seen or t in stops or t < 0 or graph.is_constant(t):
            continue
        op = producers.get(t)
        if op is None:
            return None
        seen.add(t)
        todo.extend(int(i) for i in op.inputs)
    return seen
