"""Fold an inference-mode BatchNormalization into the Conv, ConvTranspose, Gemm or MatMul
that feeds it.

With s = γ / √(σ² + ε) per output channel, BN(y) = s·(y − μ) + β, and for y = x ⊛ W + b:

    W' = W · s   (scaled along W's output-channel axis)
    b' = (b − μ) · s + β

Output-channel axis of W: Conv [M, C/g, k…] → axis 0. ConvTranspose [C, M/g, k…] → output
channel g_i·(M/g) + j lives at W[g_i·(C/g) : (g_i+1)·(C/g), j], so W is viewed as
[g, C/g, M/g, k…] and scaled along axes (0, 2). Gemm y = α·A·B + β_g·C: B is [K, N] (axis 1)
or [N, K] with transB (axis 0), and C' = s·(β_g·C − μ) + β with β_g set to 1. MatMul with a
2-D constant W and a 2-D input becomes Gemm(A, W·s, β − μ·s).

Conditions: BN is in inference mode and only its first output is used; its parameters and the
producer's weight (and bias) are constants; the producer's output is read by the BN only.
The maths runs in float64 and is rounded once to the weight's dtype. New weights get new
initializers (a weight shared with another node is never changed); unused old ones are dropped,
so an unshared weight keeps its name.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_ir as ir

from bridge.passes import _ir
from bridge.passes.base import PassResult

log = logging.getLogger(__name__)

_PRODUCERS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass(frozen=True)
class _Match:
    bn: ir.Node
    producer: ir.Node
    weight: np.ndarray
    bias: np.ndarray | None
    scale: np.ndarray  # s = γ / √(σ² + ε), float64
    shift: np.ndarray  # β − μ·s, float64
    mean: np.ndarray
    beta: np.ndarray


def fuse_conv_bn(model: onnx.ModelProto) -> PassResult:
    """Fold every eligible BatchNormalization into its producer."""
    irm = _ir.load(model)
    count = 0
    for node in list(irm.graph):
        if not _ir.is_onnx_op(node, "BatchNormalization"):
            continue
        match = _match(node)
        if isinstance(match, str):
            log.debug("BatchNormalization %r not folded: %s", node.name, match)
            continue
        _rewrite(irm.graph, match)
        count += 1
    return _ir.finish(model, irm, count)


def _match(bn: ir.Node) -> _Match | str:
    """The fusion's inputs, or the reason it does not apply."""
    if _ir.attr(bn, "training_mode", 0):
        return "training_mode is set"
    if any(o.uses() or o.is_graph_output() for o in bn.outputs[1:]):
        return "its running-statistics outputs are used"
    y = bn.inputs[0]
    producer = y.producer() if y is not None else None
    if producer is None or not _ir.is_onnx_op(producer, *_PRODUCERS):
        return "not fed by Conv, ConvTranspose, Gemm or MatMul"
    if _ir.sole_reader(y) is not bn:
        return f"{producer.op_type} output has other readers"
    params = [_ir.const_array(v) for v in bn.inputs[1:5]]
    if len(params) != 4 or any(p is None for p in params):
        return "scale, bias, mean or variance is not constant"
    if len(producer.inputs) < 2:
        return f"{producer.op_type} has no weight input"
    weight = _ir.const_array(producer.inputs[1])
    if weight is None or weight.dtype.kind != "f":
        return f"{producer.op_type} weight is not a float constant"
    bias = None
    if producer.op_type != "MatMul" and len(producer.inputs) > 2 and producer.inputs[2] is not None:
        bias = _ir.const_array(producer.inputs[2])
        if bias is None:
            return f"{producer.op_type} bias is not constant"
    if producer.op_type == "MatMul" and (weight.ndim != 2 or _ir.rank(producer.inputs[0]) != 2):
        return "MatMul is not 2-D × 2-D"
    gamma, beta, mean, var = (np.asarray(p, np.float64).reshape(-1) for p in params)
    eps = float(_ir.attr(bn, "epsilon", 1e-5))
    scale = gamma / np.sqrt(var + eps)
    if scale.size != _out_channels(producer, weight):
        return "BN channel count differs from the producer's output channels"
    return _Match(bn, producer, weight, bias, scale, beta - mean * scale, mean, beta)


def _out_channels(producer: ir.Node, weight: np.ndarray) -> int:
    op = producer.op_type
    if op == "Conv":
        return weight.shape[0]
    if op == "ConvTranspose":
        return weight.shape[1] * int(_ir.attr(producer, "group", 1))
    if op == "Gemm" and _ir.attr(producer, "transB", 0):
        return weight.shape[0]
    return weight.shape[-1]


def _scaled_weight(producer: ir.Node, weight: np.ndarray, s: np.ndarray) -> np.ndarray:
    """W · s along W's output-channel axis, in float64."""
    w = weight.astype(np.float64)
    op = producer.op_type
    if op == "Conv":
        return w * s.reshape(-1, *[1] * (w.ndim - 1))
    if op == "ConvTranspose":
        g = int(_ir.attr(producer, "group", 1))
        c, m_g, *k = w.shape
        grouped = w.reshape(g, c // g, m_g, *k) * s.reshape(g, 1, m_g, *[1] * len(k))
        return grouped.reshape(w.shape)
    if op == "Gemm" and _ir.attr(producer, "transB", 0):
        return w * s[:, None]
    return w * s[None, :]


def _new_bias(m: _Match) -> np.ndarray:
    """b' in float64: (b − μ)·s + β, or s·(β_g·C − μ) + β for Gemm."""
    op = m.producer.op_type
    if m.bias is None:
        return m.shift
    b = m.bias.astype(np.float64)
    if op == "Gemm":
        b = b * float(_ir.attr(m.producer, "beta", 1.0))
        return m.scale * (b - m.mean) + m.beta
    return (b.reshape(-1) - m.mean) * m.scale + m.beta


def _rewrite(graph: ir.Graph, m: _Match) -> None:
    producer, bn = m.producer, m.bn
    weight = _scaled_weight(producer, m.weight, m.scale).astype(m.weight.dtype)
    bias = _new_bias(m).astype(m.weight.dtype)
    old_params = list(bn.inputs[1:])
    if producer.op_type == "MatMul":
        target = ir.Node("", "Gemm", producer.inputs, name=producer.name)
        graph.insert_before(producer, target)
        _ir.splice(graph, [bn, producer], bn.outputs[0], target.outputs[0], take_name=True)
    else:
        target = producer
        if producer.op_type == "Gemm":
            producer.attributes["beta"] = ir.AttrFloat32("beta", 1.0)
        _ir.splice(graph, [bn], bn.outputs[0], producer.outputs[0], take_name=True)
    w_name = target.inputs[1].name or f"{target.name}_weight"
    old_b = target.inputs[2] if len(target.inputs) > 2 else None
    b_name = old_b.name if old_b is not None and old_b.name else f"{w_name}_bias"
    _ir.set_constant_input(graph, target, 1, weight, w_name)
    _ir.set_constant_input(graph, target, 2, bias, b_name)
    for value in old_params:
        _ir.drop_if_unused(graph, value)
