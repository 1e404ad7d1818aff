"""Tiny hand-built TFLite graphs for the lower/int8_* unit tests, edited through `Graph`."""

from __future__ import annotations

from typing import Any

import numpy as np

from bridge.lower.tflite_graph import Graph
from bridge.runtime import tflite_io
from tests.unit.lower.tflite_models import empty_model

F32, I8, I32 = 0, 9, 2  # TFLite TensorType codes


def new_graph() -> Graph:
    """A `Graph` over an empty one-subgraph model."""
    return Graph(empty_model())


def add_op(
    graph: Graph,
    op_type: str,
    ins: list[int],
    outs: list[int],
    *,
    table: str | None = None,
    **options: Any,
) -> Any:
    """Append `op_type` (version 1) with its options table (`<table or Name>OptionsT`) when
    the schema has one, its fields set from `options`."""
    op = graph.new_op(op_type, ins, outs, 1)
    name = table or "".join(p.capitalize() for p in op_type.split("_"))
    field = name + "Options"
    if op.builtinOptions is None and hasattr(graph.s, field + "T"):
        op.builtinOptionsType = getattr(graph.s.BuiltinOptions, field)
        op.builtinOptions = getattr(graph.s, field + "T")()
    for k, v in options.items():
        setattr(op.builtinOptions, k, v)
    graph.ops.append(op)
    return op


def run(graph: Graph, *feeds: np.ndarray) -> list[np.ndarray]:
    """Commit `graph`, then run its model in LiteRT; outputs in subgraph order."""
    from ai_edge_litert.interpreter import Interpreter

    graph.commit()
    interp = Interpreter(model_content=tflite_io.save(graph.model))
    interp.allocate_tensors()
    for d, x in zip(interp.get_input_details(), feeds, strict=True):
        interp.set_tensor(d["index"], x)
    interp.invoke()
    return [interp.get_tensor(d["index"]) for d in interp.get_output_details()]


def op_types(graph: Graph) -> list[str]:
    return [graph.op_type(op) for op in graph.ops]
