"""onnx_ir helpers shared by the passes: load and save, constants, shapes, safe splicing.

Passes edit an `onnx_ir.Model`, which knows each value's producer and readers; these helpers
keep the two rules every rewrite must follow: graph inputs and outputs keep their names, and
no node is removed while something still reads it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from bridge.passes.base import PassResult

#: The ONNX default domain, as written in models.
ONNX_DOMAINS = ("", "ai.onnx")


def load(model: onnx.ModelProto) -> ir.Model:
    """An editable IR copy of `model` (the proto itself is never mutated)."""
    return ir.serde.deserialize_model(model)


def save(model: ir.Model) -> onnx.ModelProto:
    return ir.serde.serialize_model(model)


def finish(
    original: onnx.ModelProto,
    model: ir.Model,
    count: int,
    hints: Mapping[str, Any] | None = None,
) -> PassResult:
    """The result of a pass that made `count` rewrites on `model` (an IR copy of `original`)."""
    if count == 0:
        return PassResult(original, False, 0, dict(hints or {}))
    return PassResult(save(model), True, count, dict(hints or {}))


def is_onnx_op(node: ir.Node, *op_types: str) -> bool:
    return node.domain in ONNX_DOMAINS and node.op_type in op_types


def opset(model: ir.Model) -> int:
    """The model's default-domain opset version."""
    return model.opset_imports.get("", model.opset_imports.get("ai.onnx", 1))


def const_array(value: ir.Value | None) -> np.ndarray | None:
    """The constant held by `value` (an initializer or a Constant node's output), else None.

    Graph inputs are never constants, even when they have an initializer as default.
    """
    if value is None or value.is_graph_input():
        return None
    try:
        tensor = ir.convenience.get_const_tensor(value)
    except ValueError:
        return None
    return None if tensor is None else np.asarray(tensor.numpy())


def static_shape(value: ir.Value | None) -> tuple[int, ...] | None:
    """The value's shape when every dimension is a known integer, else None."""
    if value is None or value.shape is None:
        return None
    dims = value.shape.dims
    if not all(isinstance(d, int) for d in dims):
        return None
    return tuple(int(d) for d in dims)


def rank(value: ir.Value | None) -> int | None:
    if value is None or value.shape is None:
        return None
    return len(value.shape)


def sole_reader(value: ir.Value) -> ir.Node | None:
    """The only node reading `value` (read once, not a graph output), else None."""
    if value.is_graph_output():
        return None
    uses = value.uses()
    if len(uses) != 1:
        return None
    return uses[0].node


def attr(node: ir.Node, name: str, default: Any = None) -> Any:
    """An attribute's Python value, or `default` when the node does not set it."""
    a = node.attributes.get(name)
    return default if a is None else a.value


def can_splice(old: ir.Value, new: ir.Value) -> bool:
    """Whether readers of `old` may read `new` instead without renaming the graph's I/O.

    When `old` is a graph output, `new` must take its name, so `new` must be a plain
    intermediate value: not a graph input, not an initializer and not another graph output.
    """
    if not old.is_graph_output():
        return True
    return not (
        new.producer() is None
        or new.is_graph_input()
        or new.is_initializer()
        or new.is_graph_output()
    )


def splice(
    graph: ir.Graph,
    dead: Sequence[ir.Node],
    old: ir.Value,
    new: ir.Value,
    *,
    take_name: bool = False,
) -> None:
    """Make every reader of `old` read `new`, then remove the nodes `dead`.

    `new` takes `old`'s name when `old` was a graph output (so the output keeps its name) or
    when `take_name` is set (so a fused node's output keeps the name of what it replaces).
    Call `can_splice` first.
    """
    name = old.name
    renamed = old.is_graph_output() or take_name
    if new.type is None:
        new.type = old.type
    if new.shape is None:
        new.shape = old.shape
    ir.convenience.replace_all_uses_with(old, new, replace_graph_outputs=True)
    graph.remove(list(dead), safe=True)
    if renamed:
        new.name = name


def add_initializer(graph: ir.Graph, array: np.ndarray, name: str) -> ir.Value:
    """Register `array` as a new initializer named `name` (made unique) and return it."""
    taken = _names(graph)
    unique, k = name, 0
    while unique in taken:
        k += 1
        unique = f"{name}_{k}"
    value = ir.Value(
        name=unique,
        type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
        shape=ir.Shape(array.shape),
        const_value=ir.tensor(array, name=unique),
    )
    graph.register_initializer(value)
    return value


def set_constant_input(
    graph: ir.Graph, node: ir.Node, index: int, array: np.ndarray, name: str
) -> None:
    """Make input `index` of `node` a new initializer holding `array`.

    The old input is detached first and dropped if nothing else reads it, so the new
    initializer can take its name; a constant shared with other nodes is left untouched.
    """
    if len(node.inputs) <= index:
        node.resize_inputs(index + 1)
    old = node.inputs[index]
    node.replace_input_with(index, None)
    drop_if_unused(graph, old)
    node.replace_input_with(index, add_initializer(graph, array, name))


def drop_if_unused(graph: ir.Graph, value: ir.Value | None) -> None:
    """Delete `value` from the initializers when nothing reads it any more."""
    if value is None or not value.is_initializer() or value.name is None:
        return
    if value.uses() or value.is_graph_output() or value.is_graph_input():
        return
    graph.initializers.pop(value.name, None)


def _names(graph: ir.Graph) -> set[str]:
    names = {v.name for v in graph.inputs} | set(graph.initializers)
    for node in graph:
        names.update(v.name for v in node.outputs if v.name)
    return {n for n in names if n}
