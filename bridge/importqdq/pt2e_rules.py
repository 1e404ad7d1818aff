"""Which PT2E QAT quantizer configs TFLite's integer kernels can run exactly, checked on the
quantize nodes convert_pt2e wrote (their scales pinned to the fake-quant modules'). Each broken
rule is a QdqRuleError naming the FX node, the tensor and the rule, and what to use instead.

- weight_symmetric: a constant (weight) is int8 with every zero point 0, per tensor or per
  channel along axis 0 (the output channel of Conv and Linear).
- weight_range: no weight level at −128 (TFLite's int8 weights lie in [−127, 127]).
- activation_range: activations per tensor over the full int8 [−128, 127] or uint8 [0, 255]
  range (a narrower clamp, e.g. act_qmin=−127, has no TFLite equivalent).
- activation_quantized: at least one activation is quantized (else nothing is int8).
- static_qdq: only static quantize/dequantize ops (dynamic quantization is not integer TFLite).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bridge.errors import QdqRuleError

ADVICE = (
    "prepare the model with a quantizer config of int8 activations over [−128, 127] and "
    "symmetric int8 weights over [−127, 127], e.g. XNNPACKQuantizer with "
    "get_symmetric_quantization_config(is_per_channel=True, is_qat=True)"
)


@dataclass(frozen=True)
class QSpec:
    """One quantize node's parameters, as the dequantize beside it uses them."""

    node: str
    tensor: str
    scale: Any
    zero_point: Any
    axis: int | None
    qmin: int
    qmax: int
    dtype: Any
    value: Any = None  # the constant (weight) tensor it reads, or None for an activation

    @property
    def constant(self) -> bool:
        return self.value is not None

    def quantize(self, x: Any) -> Any:
        """x's integer levels (torch's quantized_decomposed rounding)."""
        import torch

        ops = torch.ops.quantized_decomposed
        if self.axis is None:
            args = (self.scale, self.zero_point, self.qmin, self.qmax, self.dtype)
            return ops.quantize_per_tensor.default(x, *args)
        args = (self.scale, self.zero_point, self.axis, self.qmin, self.qmax, self.dtype)
        return ops.quantize_per_channel.default(x, *args)

    def dequantize(self, levels: Any) -> Any:
        """The float values of integer `levels`."""
        import torch

        ops = torch.ops.quantized_decomposed
        if self.axis is None:
            args = (self.scale, self.zero_point, self.qmin, self.qmax, self.dtype)
            return ops.dequantize_per_tensor.default(levels, *args)
        args = (self.scale, self.zero_point, self.axis, self.qmin, self.qmax, self.dtype)
        return ops.dequantize_per_channel.default(levels, *args)


def quantize_ops() -> tuple[Any, ...]:
    import torch

    ops = torch.ops.quantized_decomposed
    return (ops.quantize_per_tensor.default, ops.quantize_per_channel.default)


def dequantize_ops() -> tuple[Any, ...]:
    import torch

    ops = torch.ops.quantized_decomposed
    return (ops.dequantize_per_tensor.default, ops.dequantize_per_channel.default)


def constant(gm: Any, node: Any) -> Any:
    """The tensor a get_attr node reads."""
    owner, _, leaf = node.target.rpartition(".")
    return getattr(gm.get_submodule(owner) if owner else gm, leaf)


def spec(gm: Any, q: Any) -> QSpec:
    """The QSpec of quantize node `q` (per-channel scales and zero points read as tensors)."""
    src = q.args[0]
    value = constant(gm, src) if src.op == "get_attr" else None
    tensor = src.target if value is not None else src.name
    if len(q.args) == 6:
        scale, zp, qmin, qmax, dtype = q.args[1:]
        return QSpec(q.name, tensor, scale, zp, None, qmin, qmax, dtype, value)
    scale, zp = constant(gm, q.args[1]), constant(gm, q.args[2])
    axis, qmin, qmax, dtype = q.args[3:]
    return QSpec(q.name, tensor, scale, zp, int(axis), qmin, qmax, dtype, value)


def check(gm: Any) -> None:
    """Raise QdqRuleError for the first rule the converted PT2E model breaks."""
    _static_only(gm)
    specs = [
        spec(gm, n)
        for n in gm.graph.nodes
        if n.op == "call_function" and n.target in quantize_ops()
    ]
    if not any(not s.constant for s in specs):
        raise QdqRuleError(
            "the PT2E QAT model quantizes no activation, so no tensor would be int8 [rule "
            f"activation_quantized]; {ADVICE}",
            rule="activation_quantized",
        )
    for s in specs:
        if s.constant:
            _weight(s)
        else:
            _activation(s)


def _static_only(gm: Any) -> None:
    allowed = {*quantize_ops(), *dequantize_ops()}
    for n in gm.graph.nodes:
        namespace = getattr(n.target, "namespace", None)
        if namespace == "quantized_decomposed" and n.target not in allowed:
            _refuse(n.name, n.name, "static_qdq", f"{n.target} is not static int8 QDQ")


def _weight(s: QSpec) -> None:
    import torch

    zero = bool((torch.as_tensor(s.zero_point) == 0).all())
    if s.dtype != torch.int8 or not zero:
        _refuse(
            s.node,
            s.tensor,
            "weight_symmetric",
            f"weight quantized as {s.dtype} with zero points "
            f"{torch.as_tensor(s.zero_point).flatten()[:4].tolist()}; TFLite needs symmetric "
            "int8 weights (zero point 0)",
        )
    if s.axis not in (None, 0):
        _refuse(s.node, s.tensor, "weight_symmetric", f"per-channel scales on axis {s.axis}")
    levels = s.quantize(s.value.detach())
    if int(levels.min()) < -127:
        _refuse(
            s.node,
            s.tensor,
            "weight_range",
            f"weight range [{s.qmin}, {s.qmax}] put a level at −128; TFLite's int8 weights "
            "lie in [−127, 127]",
        )


def _activation(s: QSpec) -> None:
    import torch

    allowed = {(-128, 127, torch.int8), (0, 255, torch.uint8)}
    if (s.qmin, s.qmax, s.dtype) not in allowed or s.axis is not None:
        per = "per tensor" if s.axis is None else f"per channel (axis {s.axis})"
        _refuse(
            s.node,
            s.tensor,
            "activation_range",
            f"activation quantized {per} as {s.dtype} in [{s.qmin}, {s.qmax}]; TFLite's int8 "
            "activations are per tensor over the full [−128, 127] (int8) or [0, 255] (uint8) "
            "range",
        )


def _refuse(node: str, tensor: str, rule: str, what: str) -> None:
    raise QdqRuleError(
        f"PT2E QAT node {node!r} (tensor {tensor!r}): {what} [rule {rule}]; {ADVICE}",
        node=node,
        tensor=tensor,
        rule=rule,
    )
