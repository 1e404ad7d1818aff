"""Stateless recurrent layers: what onnx2tf is given for LSTM/GRU, and the check on its result.

onnx2tf 2.6.9 lowers an LSTM whose initial state is a constant zero (as torch exports it) to
UNIDIRECTIONAL_SEQUENCE_LSTM, whose state lives in *variable* tensors: LiteRT keeps them from
one `invoke()` to the next, so the second input of a user who does not call
`reset_all_variables()` starts from the first one's final state (a 3-layer encoder fell to
cosine 0.73 against torch). A GRU without an initial state gets an (unwritten) variable too.

Given an initial state computed at run time instead, onnx2tf unrolls the layer over its static
time steps into plain ops (BATCH_MATMUL, LOGISTIC, TANH, MUL, ADD) whose state is an ordinary
tensor: every invoke starts from the initial state. `runtime_zero_states` therefore feeds each
such layer a zero computed from its input, Cast(Less(s, s)) · 0 where s is one element per batch
row of X: `s < s` is false for every float, NaN and ±inf included, so the state is exactly 0.
Only the ONNX handed to onnx2tf changes; `model.opt.onnx` and the QDQ model keep the plain state.

`stateful_tensors` lists what is still stateful after lowering; the lowering records it in its
facts and warns, and the CLI's summary line says so. In int8 the unrolled steps must stay
float: see `bridge/lower/integer/recurrent.py`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bridge.runtime import tflite_io

log = logging.getLogger(__name__)

#: onnx2tf's unrolled LSTM path takes only the default gate activations.
_LSTM_ACTIVATIONS = (b"Sigmoid", b"Tanh", b"Tanh")
_END = np.iinfo(np.int64).max


def runtime_zero_states(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of `model` where eligible LSTM/GRU zero initial states are computed at run time.

    Eligible: a forward LSTM (no peepholes, clip, input_forget or other activations) whose
    initial_h and initial_c are absent or constant zeros, and a GRU with no initial_h.

    Returns:
        The model (the same object when nothing changed) and the names of the nodes rewritten.
    """
    if not any(n.op_type in ("LSTM", "GRU") for n in model.graph.node):
        return model, []
    constants = _constant_arrays(model.graph)
    chosen = [n for n in model.graph.node if _eligible(n, constants)]
    if not chosen:
        return model, []
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if _eligible(node, constants):
            nodes += _zero_state(graph, node)
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return out, [n.name for n in chosen]


def stateful_tensors(model: Any) -> list[str]:
    """Variable tensors of a parsed TFLite model that no operator writes, all subgraphs.

    LiteRT keeps a variable tensor's contents from one invoke to the next; one that an operator
    writes (onnx2tf's RNN state, squeezed from initial_h) is set afresh every invoke.
    """
    found = []
    for sg in model.subgraphs:
        written = {int(t) for op in sg.operators or [] for t in op.outputs}
        tensors = sg.tensors or []
        found += [
            tflite_io.tensor_name(t)
            for i, t in enumerate(tensors)
            if t.isVariable and i not in written
        ]
    return found


def _eligible(node: onnx.NodeProto, constants: dict[str, np.ndarray]) -> bool:
    if node.domain not in ("", "ai.onnx") or node.op_type not in ("LSTM", "GRU"):
        return False
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    inputs = list(node.input) + [""] * (8 - len(node.input))
    if attrs.get("layout", 0) != 0 or inputs[4]:
        return False
    if node.op_type == "GRU":
        return not inputs[5]
    if attrs.get("direction", b"forward") not in (b"forward", "forward") or inputs[7]:
        return False
    if attrs.get("clip", 0.0) or attrs.get("input_forget", 0):
        return False
    if tuple(attrs.get("activations", _LSTM_ACTIVATIONS)) != _LSTM_ACTIVATIONS:
        return False
    states = inputs[5:7]
    if not any(states):
        return True
    return all(s in constants and not np.any(constants[s]) for s in states)


def _zero_state(graph: onnx.GraphProto, node: onnx.NodeProto) -> list[onnx.NodeProto]:
    """Nodes computing a [1, B, H] zero from the node's X; the node's states read it."""
    hidden = next(a.i for a in node.attribute if a.name == "hidden_size")
    base = f"{node.name or node.output[0]}__zero_state"
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([0, 0, 0], np.int64), f"{base}_starts"),
            numpy_helper.from_array(np.array([1, _END, 1], np.int64), f"{base}_ends"),
            numpy_helper.from_array(np.zeros((1, 1, hidden), np.float32), f"{base}_zeros"),
        ]
    )
    made = [
        helper.make_node(
            "Slice",
            [node.input[0], f"{base}_starts", f"{base}_ends"],
            [f"{base}_s"],
            name=f"{base}/slice",
        ),
        helper.make_node("Less", [f"{base}_s", f"{base}_s"], [f"{base}_b"], name=f"{base}/less"),
        helper.make_node(
            "Cast", [f"{base}_b"], [f"{base}_f"], to=TensorProto.FLOAT, name=f"{base}/cast"
        ),
        helper.make_node("Mul", [f"{base}_f", f"{base}_zeros"], [base], name=f"{base}/mul"),
    ]
    count = 2 if node.op_type == "LSTM" else 1
    while len(node.input) < 5 + count:
        node.input.append("")
    for k in range(5, 5 + count):
        node.input[k] = base
    return made


def _constant_arrays(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Initializers (not graph inputs) and Constant-node values by name."""
    inputs = {i.name for i in graph.input}
    found = {i.name: numpy_helper.to_array(i) for i in graph.initializer if i.name not in inputs}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            found[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return found
