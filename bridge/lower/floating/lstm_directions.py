"""Split reverse and bidirectional LSTMs into forward LSTMs, for the ONNX handed to onnx2tf.

    reverse:       Y = flip(LSTM_fwd(flip(X)))          Y_h, Y_c = the forward run's final state
    bidirectional: Y = Concat(LSTM_fwd(X), reverse, axis=1), Y_h and Y_c concatenated on axis 0

where flip reverses the time axis (a Gather with constant indices T-1 … 0) and each forward
LSTM takes its direction's slice of W, R and B. Running the reverse direction on the flipped
sequence visits the same steps in the same order, so the numbers are the same.

onnx2tf 2.6.9 lowers only forward LSTMs without variable tensors (`recurrent.py` explains why);
a reverse or bidirectional one becomes LiteRT's sequence kernel with state kept between invokes.
After this split, `recurrent.runtime_zero_states` makes each forward half stateless too.
Layers with peepholes, sequence_lens, a non-zero initial state, computed weights or an unknown
time length are left as they are (and reported stateful).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

#: For each direction of the layer (its index in W, R and B), whether it runs in reverse.
_REVERSE = {"reverse": (True,), "bidirectional": (False, True)}


def split_directions(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of `model` with every eligible reverse/bidirectional LSTM split (see module doc).

    Returns:
        The model (the same object when nothing changed) and the names of the split nodes.
    """
    graph = model.graph
    if not any(n.op_type == "LSTM" for n in graph.node):
        return model, []
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    steps = time_steps(model)
    plans = {i: s for i, n in enumerate(graph.node) if (s := _steps_if_eligible(n, consts, steps))}
    if not plans:
        return model, []
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes, split = [], []
    for i, node in enumerate(out.graph.node):
        if i not in plans:
            nodes.append(node)
            continue
        new_nodes, inits = _split(node, consts, plans[i])
        nodes += new_nodes
        out.graph.initializer.extend(inits)
        split.append(node.name)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out, split


def _steps_if_eligible(
    node: onnx.NodeProto, consts: dict[str, np.ndarray], steps: dict[str, int]
) -> int | None:
    """The node's static time length if it can be split, else None."""
    if node.domain not in ("", "ai.onnx") or node.op_type != "LSTM":
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    direction = attrs.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    if direction not in _REVERSE or attrs.get("layout", 0) or attrs.get("clip", 0.0):
        return None
    if attrs.get("input_forget", 0) or "activations" in attrs or "hidden_size" not in attrs:
        return None
    inputs = list(node.input) + [""] * (8 - len(node.input))
    if inputs[4] or inputs[7] or any(n and n not in consts for n in inputs[1:4]):
        return None
    if any(s and (s not in consts or np.any(consts[s])) for s in inputs[5:7]):
        return None
    return steps.get(inputs[0])


def _split(
    node: onnx.NodeProto, consts: dict[str, np.ndarray], steps: int
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The nodes and initializers replacing `node`."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    direction = attrs.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    base = node.name or node.output[0]
    inputs = list(node.input) + [""] * (4 - len(node.input))
    flip = f"{base}__flip"
    inits = [numpy_helper.from_array(np.arange(steps - 1, -1, -1, dtype=np.int64), flip)]
    nodes: list[onnx.NodeProto] = []
    parts: list[tuple[str, str, str]] = []
    for d, reverse in enumerate(_REVERSE[direction]):
        name = f"{base}/dir{d}"
        weights = []
        for slot, src in zip(("W", "R", "B"), inputs[1:4], strict=True):
            if src:
                weights.append(f"{name}_{slot}")
                inits.append(numpy_helper.from_array(consts[src][d : d + 1], weights[-1]))
            else:
                weights.append("")
        x = inputs[0]
        if reverse:
            x = f"{name}_x"
            nodes.append(helper.make_node("Gather", [inputs[0], flip], [x], axis=0, name=x))
        y, y_h, y_c = f"{name}_y", f"{name}_h", f"{name}_c"
        hidden = attrs["hidden_size"]
        nodes.append(
            helper.make_node("LSTM", [x, *weights], [y, y_h, y_c], name=name, hidden_size=hidden)
        )
        if reverse:
            nodes.append(
                helper.make_node("Gather", [y, flip], [f"{y}_flip"], axis=0, name=f"{y}_flip")
            )
            y = f"{y}_flip"
        parts.append((y, y_h, y_c))
    nodes += _join(node, parts)
    return nodes, inits


def _join(node: onnx.NodeProto, parts: list[tuple[str, str, str]]) -> list[onnx.NodeProto]:
    """Concat (or Identity, for one direction) of each part into the node's own outputs."""
    joined = []
    for slot, axis in ((0, 1), (1, 0), (2, 0)):
        if slot >= len(node.output) or not node.output[slot]:
            continue
        names = [p[slot] for p in parts]
        out, name = node.output[slot], f"{node.name}/join{slot}"
        op = helper.make_node("Concat", names, [out], axis=axis, name=name)
        if len(names) == 1:
            op = helper.make_node("Identity", names, [out], name=name)
        joined.append(op)
    return joined


def time_steps(model: onnx.ModelProto) -> dict[str, int]:
    """Static first dimension of every value whose shape ONNX shape inference finds."""
    found = {}
    g = onnx.shape_inference.infer_shapes(model).graph
    for vi in [*g.input, *g.value_info, *g.output]:
        dims = vi.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value"):
            found[vi.name] = dims[0].dim_value
    return found
