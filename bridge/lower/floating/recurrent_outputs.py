"""Two onnx2tf 2.6.9 recurrent-output bugs, worked around in the ONNX it is given.

Skipped outputs: onnx2tf drops a recurrent node's empty output names and then matches the rest
by position, so an LSTM read only for c_n (`['', '', Y_c]`, as torch exports it) had its Y_c
computed as Y: c_n came out [T, 1, B, H] instead of [1, B, H] (or [T + L - 1, B, H] once L
layers' states are concatenated). `name_skipped_outputs` names every empty output before the
last named one; named outputs nobody reads cost nothing.

One-step GRUs: onnx2tf's unrolled GRU builds Y with rank 3 instead of 4 when T = 1, and LiteRT
then fails to prepare the model ("XNNPack delegate failed to reshape runtime"). A forward GRU's
step t depends only on steps 0 … t, so `pad_single_step_grus` runs it over [X, X] and reads

    Y = Y2[0:1]        Y_h = Reshape(Y2[0:1], [1, -1, H])

which are the same numbers as the one-step run.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from bridge.lower.floating.lstm_directions import time_steps

RECURRENT_OPS = ("LSTM", "GRU", "RNN")


def name_skipped_outputs(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of `model` whose recurrent nodes have no empty output before a named one.

    Returns:
        The model (the same object when nothing changed) and the names of the nodes changed.
    """
    if not any(_skips_output(n) for n in model.graph.node):
        return model, []
    out = onnx.ModelProto()
    out.CopyFrom(model)
    changed = []
    for node in out.graph.node:
        if not _skips_output(node):
            continue
        base = node.name or next(o for o in node.output if o)
        for i, name in enumerate(node.output):
            if not name and any(node.output[i + 1 :]):
                node.output[i] = f"{base}__unread{i}"
        changed.append(node.name)
    return out, changed


def pad_single_step_grus(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of `model` where every forward one-step GRU runs over two steps (module doc).

    Returns:
        The model (the same object when nothing changed) and the names of the nodes padded.
    """
    if not any(n.op_type == "GRU" for n in model.graph.node):
        return model, []
    steps = time_steps(model)
    if not any(_one_step_gru(n, steps) for n in model.graph.node):
        return model, []
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes: list[onnx.NodeProto] = []
    padded = []
    for node in out.graph.node:
        if not _one_step_gru(node, steps):
            nodes.append(node)
            continue
        nodes += _pad(out.graph, node)
        padded.append(node.name)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out, padded


def _skips_output(node: onnx.NodeProto) -> bool:
    if node.domain not in ("", "ai.onnx") or node.op_type not in RECURRENT_OPS:
        return False
    return any(not o and any(node.output[i + 1 :]) for i, o in enumerate(node.output))


def _one_step_gru(node: onnx.NodeProto, steps: dict[str, int]) -> bool:
    if node.domain not in ("", "ai.onnx") or node.op_type != "GRU":
        return False
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    direction = attrs.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    if direction != "forward" or attrs.get("layout", 0) or "hidden_size" not in attrs:
        return False
    if len(node.input) > 4 and node.input[4]:  # sequence_lens
        return False
    return steps.get(node.input[0]) == 1


def _pad(graph: onnx.GraphProto, node: onnx.NodeProto) -> list[onnx.NodeProto]:
    """Concat(X, X) → the node → Slice of its first step into Y and Y_h."""
    hidden = next(a.i for a in node.attribute if a.name == "hidden_size")
    base = f"{node.name or next(o for o in node.output if o)}__two_steps"
    graph.initializer.extend(
        numpy_helper.from_array(np.array(v, np.int64), f"{base}_{k}")
        for k, v in (("zero", [0]), ("one", [1]), ("state", [1, -1, hidden]))
    )
    x2, y2, first = f"{base}_x", f"{base}_y", f"{base}_first"
    made = [helper.make_node("Concat", [node.input[0]] * 2, [x2], axis=0, name=x2)]
    outputs = list(node.output) + [""] * (2 - len(node.output))
    node.input[0] = x2
    del node.output[:]
    node.output.extend([y2, f"{base}_h"])
    made.append(node)
    starts = [y2, f"{base}_zero", f"{base}_one", f"{base}_zero"]
    made.append(helper.make_node("Slice", starts, [outputs[0] or first], name=first))
    if outputs[1]:
        state = [outputs[0] or first, f"{base}_state"]
        made.append(helper.make_node("Reshape", state, [outputs[1]], name=f"{base}_state"))
    return made
