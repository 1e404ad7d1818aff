"""Which torch.ao QAT QConfigs TFLite's integer kernels can run exactly, checked on the frozen
model's FakeQuantize modules before export. Each broken rule is a QdqRuleError naming the
module and the QConfig to use instead (`qat.qat_qconfig_mapping()`).

- weight_symmetric: weights qint8, symmetric (per_channel_symmetric or per_tensor_symmetric),
  every zero point 0; per-channel along axis 0 (the output channel of Conv and Linear).
- weight_range: no weight level at −128 (TFLite's int8 weights lie in [−127, 127]). A weight
  range of [−128, 127] is accepted when no level reaches −128, since then it is the same model.
- activation_range: activations quint8 in [0, 255] or qint8 in [−128, 127], per tensor (a
  narrower fake-quant clamp, e.g. quant_max=127, has no TFLite equivalent). An observer's
  reduce_range only picks a coarser scale and converts exactly.
- activation_quantized: at least one activation is fake-quantized (else nothing is int8).
"""

from __future__ import annotations

from typing import Any

from bridge.errors import QdqRuleError
from bridge.importqdq.qat_freeze import weight_modules

ADVICE = (
    "prepare the model with bridge.qat_qconfig_mapping() (quint8 activations in [0, 255], "
    "per-channel symmetric qint8 weights in [−127, 127])"
)


def check(frozen: Any) -> None:
    """Raise QdqRuleError for the first rule the frozen QAT model breaks."""
    weights = {id(m.weight_fake_quant): n for n, m in weight_modules(frozen)}
    for name, mod in weight_modules(frozen):
        _weight(name, mod)
    acts = [(n, m) for n, m in frozen.named_modules() if _is_fake_quant(m) and id(m) not in weights]
    if not acts:
        raise QdqRuleError(
            "the QAT model fake-quantizes no activation, so no tensor would be int8 [rule "
            f"activation_quantized]; {ADVICE}",
            rule="activation_quantized",
        )
    for name, fq in acts:
        _activation(name, fq)


def _is_fake_quant(mod: Any) -> bool:
    from torch.ao.quantization import FakeQuantizeBase

    return isinstance(mod, FakeQuantizeBase)


def _weight(name: str, mod: Any) -> None:
    import torch

    fq = mod.weight_fake_quant
    symmetric = fq.qscheme in (torch.per_channel_symmetric, torch.per_tensor_symmetric)
    per_channel = fq.qscheme in (torch.per_channel_symmetric, torch.per_channel_affine)
    if fq.dtype != torch.qint8 or not symmetric or bool((fq.zero_point != 0).any()):
        _refuse(
            name,
            "weight_symmetric",
            f"weight fake-quant is {fq.dtype} {fq.qscheme} with zero points "
            f"{fq.zero_point.flatten()[:4].tolist()}; TFLite needs symmetric int8 weights",
        )
    if per_channel and int(fq.ch_axis) != 0:
        _refuse(name, "weight_symmetric", f"per-channel weight scales on axis {fq.ch_axis}, not 0")
    scale = fq.scale.reshape([-1] + [1] * (mod.weight.dim() - 1)) if per_channel else fq.scale
    levels = torch.round(mod.weight.detach() / scale)
    if float(levels.min()) < -127:
        _refuse(
            name,
            "weight_range",
            "weight fake-quant range [−128, 127] put a weight at level −128; TFLite's int8 "
            "weights lie in [−127, 127]",
        )


def _activation(name: str, fq: Any) -> None:
    import torch

    allowed = {(0, 255, torch.quint8), (-128, 127, torch.qint8)}
    kind = (int(fq.quant_min), int(fq.quant_max), fq.dtype)
    per_tensor = fq.qscheme in (torch.per_tensor_affine, torch.per_tensor_symmetric)
    if kind not in allowed or not per_tensor:
        _refuse(
            name,
            "activation_range",
            f"activation fake-quant is {fq.dtype} {fq.qscheme} in [{kind[0]}, {kind[1]}]; "
            "TFLite's int8 activations are per tensor over the full [0, 255] (uint8) or "
            "[−128, 127] (int8) range",
        )


def _refuse(name: str, rule: str, what: str) -> None:
    raise QdqRuleError(f"QAT module {name!r}: {what} [rule {rule}]; {ADVICE}", node=name, rule=rule)
