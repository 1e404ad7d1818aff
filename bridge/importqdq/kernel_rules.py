"""Check an imported QDQ model against TFLite's integer kernel rules (`bridge.quantize.rules`).

bridge's own quantizer follows the table by construction; a foreign one (ONNX Runtime's, a
QAT export) may not. Each rule below is one TFLite kernel requirement that no exact lowering
can work around, so a model that breaks it is refused with `QdqRuleError` naming the node, the
tensor, the rule and what to do. What CAN be converted exactly is accepted: uint8 tensors
become int8 with the zero point shifted by −128 (so uint8 weights with zero point 128 are
symmetric int8), and a float bias is rounded to int32 at s_in·s_w like TFLite's converter.

The rules (short name: requirement):
- activation_dtype: activations are int8/uint8 (int8 mode) or int16 (int16x8), not mixed.
- int16_symmetric: int16 activations have zero point 0.
- weight_symmetric: weights are int8 (or uint8 at zero point 128) with zero point 0.
- weight_range: int8 weight levels lie in [−127, 127].
- weight_axis: per-channel weight scales run along the kernel's output-channel axis.
- bias_scale: a quantized bias is int32 (int64 in 16x8), zero point 0, and its values lie on
  the grid s_in·s_w[c] (its scale is s_in·s_w or a whole multiple of it).
- fixed_output: Sigmoid/Softmax/Tanh/LogSoftmax outputs have the kernel's fixed parameters.
- same_scale: scale-keeping ops (pooling, reshape, concat, ...) have one scale in and out.
- symmetric_input: MatMul's activation input 1 has zero point 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from bridge.errors import QdqRuleError
from bridge.lower.integer.assign import SCALE_RTOL
from bridge.lower.integer.qdq import QdqModel
from bridge.modes import MODES
from bridge.qparams import QParams
from bridge.quantize import rules
from bridge.quantize.weights import BIAS_DTYPES

#: A bias level may sit this far from an integer, plus 4 float32 epsilons of itself (the bias
#: and both scales are float32); farther, TFLite's int32 grid at s_in·s_w would move the bias.
_BIAS_LEVEL_TOL = 1e-3


@dataclass(frozen=True)
class Violation:
    """One broken rule: where, which rule, and the message (what is wrong, what to do)."""

    node: str
    tensor: str
    rule: str
    message: str


def activation_mode(qdq: QdqModel, stored: dict[str, str]) -> str:
    """The lowering mode the activations' stored types call for ("int8" or "int16x8").

    Raises:
        QdqRuleError: an activation type TFLite has no kernels for, or int8 and int16 mixed.
    """
    kinds = {
        qdq.qdq_name(n): stored.get(qdq.qdq_name(n), qp.dtype) for n, qp in qdq.activations.items()
    }
    act_modes = _act_modes()
    bad = {n: k for n, k in kinds.items() if k not in act_modes}
    modes = {act_modes[k] for k in kinds.values() if k in act_modes}
    if bad or len(modes) > 1 or not modes:
        tensor, kind = next(iter(bad.items()), next(iter(kinds.items()), ("", "none")))
        raise QdqRuleError(
            f"tensor {tensor!r} is quantized as {kind}; TFLite integer kernels need every "
            "activation int8 or uint8 (int8 mode) or every one int16 (int16x8) [rule "
            "activation_dtype]; re-quantize the activations with one of those types",
            tensor=tensor,
            rule="activation_dtype",
        )
    return modes.pop()


def _act_modes() -> dict[str, str]:
    """Stored activation type → the mode that lowers it (uint8 shifts to int8 exactly)."""
    out: dict[str, str] = {}
    for name in MODES:
        if MODES.get(name).integer:
            out.setdefault(MODES.get(name).activation_dtype, name)
    out["uint8"] = out["int8"]
    return out


def check(qdq: QdqModel, stored: dict[str, str], *, mode: str) -> None:
    """Raise QdqRuleError for the first violation (listing how many more there are)."""
    found = violations(qdq, stored, mode=mode)
    if not found:
        return
    first = found[0]
    more = f" ({len(found) - 1} more violation(s) besides)" if len(found) > 1 else ""
    raise QdqRuleError(
        first.message + more,
        node=first.node,
        tensor=first.tensor,
        rule=first.rule,
        violations=[v.message for v in found],
    )


def violations(qdq: QdqModel, stored: dict[str, str], *, mode: str) -> list[Violation]:
    """Every rule the model breaks, in graph order."""
    act = MODES.get(mode).activation_dtype
    consts = {i.name: numpy_helper.to_array(i) for i in qdq.float_model.graph.initializer}
    found: list[Violation] = []
    if act == "int16":
        found += [
            Violation("", qdq.qdq_name(n), "int16_symmetric", _int16_message(qdq.qdq_name(n), qp))
            for n, qp in qdq.activations.items()
            if np.any(qp.zero_point != 0)
        ]
    for node in qdq.float_model.graph.node:
        rule = rules.rule_for(node.op_type, node)
        if rule is None or rule.is_float:
            continue
        found += _weight(node, rule, qdq, stored, consts)
        found += _bias(node, rule, qdq, stored, consts.get(_input(node, rule.bias)), act)
        found += _outputs(node, rule, qdq, act)
    return found


def _int16_message(tensor: str, qp: QParams) -> str:
    return (
        f"int16 activation {tensor!r} has zero point {int(qp.zero_point[0])}; TFLite's 16x8 "
        "kernels need symmetric int16 activations (zero point 0) [rule int16_symmetric]; "
        "re-quantize the activations symmetrically"
    )


def _label(node: onnx.NodeProto) -> str:
    return f"{node.op_type} node {node.name or node.output[0]!r}"


def _weight(node, rule, qdq, stored, consts) -> list[Violation]:
    if rule.weight is None or len(node.input) <= rule.weight:
        return []
    name = node.input[rule.weight]
    qp = qdq.constants.get(name)
    if qp is None or name not in consts:
        return []
    where, kind = _label(node), stored.get(name, qp.dtype)
    if qp.dtype != "int8" or np.any(qp.zero_point != 0):
        zp = (qp.zero_point + (128 if kind == "uint8" else 0))[:4].tolist()
        return [
            Violation(
                node.name,
                name,
                "weight_symmetric",
                f"{where}: weight {name!r} is {kind} with zero points {zp}; TFLite needs "
                "symmetric int8 weights with zero point 0 (uint8 only at zero point 128) [rule "
                "weight_symmetric]; re-quantize the weights symmetric int8 (ONNX Runtime: "
                "weight_type=QuantType.QInt8, extra_options WeightSymmetric=True)",
            )
        ]
    value = consts[name].astype(np.float64)
    axis = rules.weight_axis(rule, value.ndim)
    if qp.per_channel and axis is not None and qp.axis % value.ndim != axis:
        return [
            Violation(
                node.name,
                name,
                "weight_axis",
                f"{where}: weight {name!r} has per-channel scales along axis {qp.axis}; "
                f"TFLite's kernel needs them along the output-channel axis {axis} [rule "
                f"weight_axis]; re-quantize per channel on axis {axis}",
            )
        ]
    levels = value / _broadcast(qp.scale, qp.axis if qp.per_channel else None, value.ndim)
    if levels.size and float(np.min(np.round(levels))) < -127:
        return [
            Violation(
                node.name,
                name,
                "weight_range",
                f"{where}: weight {name!r} uses level −128"
                f"{' (uint8 level 0 at zero point 128)' if kind == 'uint8' else ''}; "
                "TFLite's int8 weights lie in "
                "[−127, 127] [rule weight_range]; re-quantize with a restricted range "
                "(qmin = −127, as symmetric quantizers do)",
            )
        ]
    return []


def _broadcast(scale: np.ndarray, axis: int | None, ndim: int) -> np.ndarray:
    if axis is None:
        return scale.astype(np.float64).reshape(())
    shape = [1] * ndim
    shape[axis % ndim] = -1
    return scale.astype(np.float64).reshape(shape)


def _input(node: onnx.NodeProto, index: int | None) -> str:
    return node.input[index] if index is not None and index < len(node.input) else ""


def _bias(node, rule, qdq, stored, value: np.ndarray | None, act: str) -> list[Violation]:
    """A quantized bias must be held exactly by TFLite's int32 (int64) grid at s_in·s_w[c].

    Its own scale need not be s_in·s_w: when every dequantized value is a whole multiple of
    s_in·s_w (a bias scale that is an integer multiple of it) the grid holds it exactly.
    """
    name = _input(node, rule.bias)
    qp = qdq.constants.get(name)
    w_qp = qdq.constants.get(_input(node, rule.weight))
    x_qp = qdq.activations.get(node.input[0])
    if not name or qp is None or w_qp is None or x_qp is None or value is None:
        return []  # a float bias is rounded to int32 at s_in·s_w, as TFLite's converter does
    want = np.float32(x_qp.scale[0]) * w_qp.scale.astype(np.float32)
    want = np.broadcast_to(want, value.shape).astype(np.float64)
    kind, dtype = stored.get(name, qp.dtype), BIAS_DTYPES[act]
    levels = value.astype(np.float64) / np.where(want > 0, want, 1.0)
    info = np.iinfo(np.dtype(dtype))
    tol = _BIAS_LEVEL_TOL + 4 * np.finfo(np.float32).eps * np.abs(levels)
    exact = np.all(np.abs(levels - np.round(levels)) <= tol) and np.all(
        (levels >= info.min) & (levels <= info.max)
    )
    if kind == dtype and not np.any(qp.zero_point != 0) and exact:
        return []
    got = f"{kind}, scale {qp.scale[:3].tolist()}, zero point {qp.zero_point[:3].tolist()}"
    return [
        Violation(
            node.name,
            name,
            "bias_scale",
            f"{_label(node)}: bias {name!r} is {got}; TFLite's kernel needs {dtype} with zero "
            f"point 0 and values on the grid s_in·s_w = {want[:3].tolist()} [rule bias_scale]; "
            "re-quantize the bias at scale s_in·s_w, or leave it float",
        )
    ]


def _outputs(node, rule, qdq, act: str) -> list[Violation]:
    out = node.output[0]
    if out not in qdq.activations:
        return []
    y = qdq.activations[out]
    if rule.output == "fixed" and act in rule.fixed:
        scale, zero = rule.fixed[act]
        if not _same(y, scale, zero):
            return [_fixed(node, qdq.qdq_name(out), y, scale, zero)]
    if rule.output == "same":
        for i in rule.data_inputs(node):
            x = qdq.activations.get(node.input[i])
            if x is not None and not _same(x, float(y.scale[0]), int(y.zero_point[0])):
                return [_keeps(node, node.input[i], x, qdq.qdq_name(out), y)]
    for i in rule.symmetric_inputs:
        x = qdq.activations.get(node.input[i]) if i < len(node.input) else None
        if x is not None and np.any(x.zero_point != 0):
            return [
                Violation(
                    node.name,
                    node.input[i],
                    "symmetric_input",
                    f"{_label(node)}: input {i} {node.input[i]!r} has zero point "
                    f"{int(x.zero_point[0])}; LiteRT's integer {node.op_type} needs zero point "
                    "0 there [rule symmetric_input]; quantize that tensor symmetrically",
                )
            ]
    return []


def _same(qp: QParams, scale: float, zero: int) -> bool:
    s = float(qp.scale[0])
    return int(qp.zero_point[0]) == zero and abs(s - scale) <= SCALE_RTOL * max(s, scale)


def _fixed(node, tensor: str, y: QParams, scale: float, zero: int) -> Violation:
    return Violation(
        node.name,
        tensor,
        "fixed_output",
        f"{_label(node)}: output {tensor!r} has scale {float(y.scale[0]):.9g}, zero point "
        f"{int(y.zero_point[0])}; TFLite's {node.op_type} kernel fixes its output at scale "
        f"{scale:.9g}, zero point {zero} [rule fixed_output]; set that tensor's parameters to "
        "those (ONNX Runtime: extra_options TensorQuantOverrides)",
    )


def _keeps(node, x_name: str, x: QParams, y_name: str, y: QParams) -> Violation:
    return Violation(
        node.name,
        y_name,
        "same_scale",
        f"{_label(node)}: input {x_name!r} has (scale {float(x.scale[0]):.9g}, zero point "
        f"{int(x.zero_point[0])}) but output {y_name!r} has ({float(y.scale[0]):.9g}, "
        f"{int(y.zero_point[0])}); TFLite's {node.op_type} kernel keeps its input's scale "
        "[rule same_scale]; give both tensors one scale and zero point",
    )
