"""Turn "onnx2tf cannot lower this" into an `UnsupportedOpError` naming the ONNX node.

onnx2tf 2.6.9 reports an unsupported op in two ways: it raises (NotImplementedError, or
SystemExit after logging an error), or, more often, it silently emits a TFLite CUSTOM op with
code `ONNX_<OPTYPE>` that no interpreter can run. Both end here, with a suggested rewrite.
"""

from __future__ import annotations

import re
from typing import Any

import onnx

from bridge.errors import UnsupportedOpError
from bridge.runtime import tflite_io

#: ONNX op type → how to express it with ops that lower (a decomposition or a workaround).
SUGGESTIONS: dict[str, str] = {
    "LpPool": "write it as pow(|x|, p) → AvgPool → pow(1/p), scaled by the kernel size",
    "DFT": "multiply by a precomputed DFT matrix (MatMul with cos/sin weights)",
    "STFT": "frame the signal with a strided Conv1d/unfold and MatMul by a DFT matrix",
    "Unique": "its output size depends on the data; do it outside the model (post-processing)",
    "NonZero": "its output size depends on the data; use a fixed-size mask (Where) instead",
    "Det": "use a closed form for 2×2/3×3 matrices, or compute it outside the model",
    "MaxPool": "use dilation 1 (a dilated pool is a strided slice followed by MaxPool)",
    "Clip": "give Clip constant bounds with min ≤ max (or use Relu/Min/Max)",
    "Loop": "unroll the loop in torch (a Python for-loop with a fixed trip count)",
    "If": "compute both branches and select with torch.where",
}

#: Said when the op has no specific suggestion.
GENERIC_SUGGESTION = (
    "rewrite it in torch with basic ops (MatMul, Conv, Add, Mul, Relu, Reshape, ...) or add a "
    "graph pass under bridge/passes/ that decomposes it"
)


def suggestion(op_type: str, domain: str = "") -> str:
    """How to get rid of `op_type`."""
    if domain not in ("", "ai.onnx"):
        return (
            f"it is a custom op of domain {domain!r}; replace it with standard ONNX ops "
            "(decompose it in torch before export)"
        )
    return SUGGESTIONS.get(op_type, GENERIC_SUGGESTION)


def error_for_node(node: onnx.NodeProto, detail: str = "") -> UnsupportedOpError:
    """An UnsupportedOpError for ONNX `node`, with the suggested rewrite."""
    op = node.op_type if not node.domain else f"{node.domain}::{node.op_type}"
    text = f"cannot lower ONNX node {node.name!r} (op {op}) to TFLite"
    if detail:
        text += f": {detail}"
    text += f". To fix: {suggestion(node.op_type, node.domain)}."
    return UnsupportedOpError(text, node=node.name, op=node.op_type)


def node_in_message(model: onnx.ModelProto, message: str) -> onnx.NodeProto | None:
    """The ONNX node a message talks about: `node=<name>`/`op=<name>` tokens, else any name."""
    nodes = {n.name: n for n in model.graph.node if n.name}
    for token in re.findall(r"\b(?:node|op|onnx_node|node_name)=([^\s,;)\]]+)", message):
        token = token.strip("'\"")
        if token in nodes:
            return nodes[token]
    mentioned = [name for name in nodes if name in message]
    return nodes[max(mentioned, key=len)] if mentioned else None


def op_type_in_message(model: onnx.ModelProto, message: str) -> onnx.NodeProto | None:
    """The first node whose op type the message names as `op=<Type>` (when names are absent)."""
    for token in re.findall(r"\bop=([A-Za-z0-9_]+)", message):
        for n in model.graph.node:
            if n.op_type == token:
                return n
    return None


def custom_ops(tflite_model: Any, onnx_model: onnx.ModelProto) -> list[UnsupportedOpError]:
    """One error per CUSTOM op in the main subgraph, each naming the ONNX node behind it."""
    sg = tflite_model.subgraphs[0]
    by_output = {o: n for n in onnx_model.graph.node for o in n.output}
    errors = []
    for op in sg.operators:
        code = tflite_model.operatorCodes[op.opcodeIndex]
        if not code.customCode:
            continue
        custom = tflite_io.op_name(tflite_model, op)
        outs = [tflite_io.tensor_name(sg.tensors[t]) for t in op.outputs]
        node = next((by_output[o] for o in outs if o in by_output), None)
        if node is None:
            node = _node_by_custom_code(onnx_model, custom)
        detail = f"onnx2tf emitted an unrunnable TFLite CUSTOM op {custom!r}"
        if node is None:
            errors.append(
                UnsupportedOpError(
                    f"cannot lower the tensor(s) {outs} to TFLite: {detail}. "
                    f"To fix: {GENERIC_SUGGESTION}.",
                    op=custom.removeprefix("ONNX_"),
                )
            )
        else:
            errors.append(error_for_node(node, detail))
    return errors


def _node_by_custom_code(model: onnx.ModelProto, custom: str) -> onnx.NodeProto | None:
    wanted = custom.removeprefix("ONNX_").upper()
    return next((n for n in model.graph.node if n.op_type.upper() == wanted), None)
