"""Read a QDQ ONNX model: its quantization parameters, and the float graph it computes.

A QDQ model quantizes an activation X as `X → QuantizeLinear → DequantizeLinear → consumers`
and stores a weight as an integer initializer feeding a DequantizeLinear. Stripping the Q/DQ
nodes and replacing each constant DequantizeLinear by its result gives the float graph whose
weights are exactly the dequantized weights the QDQ model computes with; that float graph is
what gets lowered to TFLite, and the parameters read here are re-applied to it afterwards.

Scales are read from the Q/DQ nodes' own initializers, so any standard QDQ model works (the
bridge quantizer's or ONNX Runtime's). uint8 activations are carried as int8 with the zero
point shifted by −128, which represents the same real values exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from bridge.errors import LoweringError
from bridge.qparams import QParams

_ONNX_INT_DTYPES = {
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.INT16: "int16",
    onnx.TensorProto.UINT16: "uint16",
    onnx.TensorProto.INT32: "int32",
}


@dataclass(frozen=True)
class QdqModel:
    """A QDQ model split into its float graph and its quantization parameters.

    Attributes:
        float_model: the graph without Q/DQ nodes; weights are the dequantized values.
        activations: float-graph tensor name → parameters of the QuantizeLinear on it.
        constants: float-graph initializer name → parameters of the DequantizeLinear that
            produced it (weights, biases, quantized constant operands).
        renamed: float-graph name → QDQ-graph name, for the tensors that feed a graph output
            through Q/DQ and so take the output's name in the float graph.
    """

    float_model: onnx.ModelProto
    activations: dict[str, QParams]
    constants: dict[str, QParams]
    renamed: dict[str, str] = field(default_factory=dict)

    def qdq_name(self, name: str) -> str:
        """The QDQ model's name for float-graph tensor `name`."""
        return self.renamed.get(name, name)

    @property
    def activation_dtype(self) -> str | None:
        """The integer type most activations use ("int8" or "int16"), None if none."""
        kinds = [q.dtype for q in self.activations.values()]
        return max(set(kinds), key=kinds.count) if kinds else None


def read_qdq(model: onnx.ModelProto) -> QdqModel:
    """Split a QDQ model into its float graph and the quantization parameters of its tensors.

    Raises:
        LoweringError: a tensor is quantized twice with different parameters, a
            DequantizeLinear reads a non-constant tensor that no QuantizeLinear produced, or a
            graph output is an integer tensor.
    """
    g = model.graph
    consts = _constants(g)
    aliases: dict[str, str] = {}  # Q or DQ output → the float tensor it stands for
    activations: dict[str, QParams] = {}
    folded: dict[str, np.ndarray] = {}
    constants: dict[str, QParams] = {}
    quantized_consts: dict[str, tuple[np.ndarray, QParams]] = {}
    kept: list[onnx.NodeProto] = []
    q_outputs: set[str] = set()  # integer tensors (QuantizeLinear outputs)
    for node in g.node:
        if node.op_type == "QuantizeLinear":
            qp = _qparams(node, consts)
            src = node.input[0]
            if src in consts or src in folded:
                value = consts[src] if src in consts else folded[src]
                quantized_consts[node.output[0]] = (qp.quantize(np.asarray(value, np.float64)), qp)
                continue
            src = aliases.get(src, src)
            _record(activations, src, qp, node)
            aliases[node.output[0]] = src
            q_outputs.add(node.output[0])
        elif node.op_type == "DequantizeLinear":
            src = node.input[0]
            if src in consts or src in quantized_consts:
                q, qp = (
                    quantized_consts[src]
                    if src in quantized_consts
                    else (consts[src], _qparams(node, consts))
                )
                folded[node.output[0]] = qp.dequantize(q)
                constants[node.output[0]] = _normalise(qp)
                continue
            if src not in aliases:
                raise LoweringError(
                    f"DequantizeLinear {node.name!r} reads {src!r}, which is neither a constant "
                    "nor the output of a QuantizeLinear; integer model inputs are not supported"
                )
            aliases[node.output[0]] = aliases[src]
        else:
            kept.append(node)
    _check_float_outputs(g, q_outputs)
    float_model = _rebuild(model, kept, aliases, folded)
    renames = _output_renames(g, aliases)
    activations = {renames.get(k, k): _normalise(v) for k, v in activations.items()}
    for out in g.output:  # outputs copied by an Identity share their source's parameters
        src = aliases.get(out.name)
        if src is not None and out.name not in activations:
            activations[out.name] = activations[renames.get(src, src)]
    return QdqModel(float_model, activations, constants, {v: k for k, v in renames.items()})


def _check_float_outputs(g: onnx.GraphProto, q_outputs: set[str]) -> None:
    integer_outputs = [o.name for o in g.output if o.name in q_outputs]
    if integer_outputs:
        raise LoweringError(
            f"graph outputs {integer_outputs} are integer tensors; the QDQ model must end in "
            "DequantizeLinear (the lowering makes integer model outputs with io_dtype)"
        )


def _constants(g: onnx.GraphProto) -> dict[str, np.ndarray]:
    values = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for node in g.node:
        if node.op_type == "Constant":
            attr = next((a for a in node.attribute if a.name == "value"), None)
            if attr is not None:
                values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def _qparams(node: onnx.NodeProto, consts: dict[str, np.ndarray]) -> QParams:
    scale = np.asarray(consts[node.input[1]], np.float32).ravel()
    if len(node.input) > 2 and node.input[2]:
        zp_arr = consts[node.input[2]]
        dtype = str(zp_arr.dtype)
        zero = np.asarray(zp_arr, np.int64).ravel()
    else:
        dtype, zero = "uint8", np.zeros(scale.shape, np.int64)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    axis = int(attrs.get("axis", 1)) if scale.size > 1 else None
    return QParams(scale, zero, dtype, axis)


def _normalise(qp: QParams) -> QParams:
    """uint8 → int8 with zero point −128 (same real values); other types unchanged."""
    if qp.dtype == "uint8":
        return QParams(qp.scale, qp.zero_point - 128, "int8", qp.axis)
    return qp


def _record(table: dict[str, QParams], name: str, qp: QParams, node: onnx.NodeProto) -> None:
    old = table.get(name)
    if old is not None and not (
        np.array_equal(old.scale, qp.scale) and np.array_equal(old.zero_point, qp.zero_point)
    ):
        raise LoweringError(
            f"tensor {name!r} is quantized twice with different parameters (again by "
            f"{node.name!r}); a tensor must have one scale and zero point"
        )
    table[name] = qp


def _output_renames(g: onnx.GraphProto, aliases: dict[str, str]) -> dict[str, str]:
    """Float tensor → graph output name, for outputs that are a DequantizeLinear's result.

    A tensor that is a graph input, or already feeds another output, is not renamed; `_rebuild`
    copies it to the output with an Identity node instead.
    """
    inputs = {i.name for i in g.input}
    renames: dict[str, str] = {}
    for out in g.output:
        src = aliases.get(out.name)
        if src is not None and src not in inputs and src not in renames:
            renames[src] = out.name
    return renames


def _rebuild(
    model: onnx.ModelProto,
    kept: list[onnx.NodeProto],
    aliases: dict[str, str],
    folded: dict[str, np.ndarray],
) -> onnx.ModelProto:
    g = model.graph
    renames = _output_renames(g, aliases)

    def name(x: str) -> str:
        x = aliases.get(x, x)
        return renames.get(x, x)

    nodes = []
    for node in kept:
        new = onnx.NodeProto()
        new.CopyFrom(node)
        new.input[:] = [name(x) if x else x for x in node.input]
        new.output[:] = [name(x) for x in node.output]
        nodes.append(new)
    for out in g.output:
        if out.name in aliases and out.name not in renames.values():
            nodes.append(onnx.helper.make_node("Identity", [name(out.name)], [out.name]))
    used = {x for n in nodes for x in n.input} | {o.name for o in g.output}
    nodes = [n for n in nodes if n.op_type != "Constant" or n.output[0] in used]
    initializers = [numpy_helper.from_array(v, k) for k, v in folded.items() if k in used]
    initializers += [i for i in g.initializer if i.name in used and i.name not in folded]
    graph = onnx.helper.make_graph(
        nodes, g.name, list(g.input), list(g.output), initializers, doc_string=g.doc_string
    )
    out = onnx.helper.make_model(graph, opset_imports=list(model.opset_import))
    out.ir_version = model.ir_version
    return out
