"""Freeze a torch.ao FX QAT model (after prepare_qat_fx and training) into an exportable copy
that computes exactly what the fake-quant model computes.

- eval mode, observers off, fake-quant on: every learned scale and zero point is fixed;
- each Conv-BN QAT module (ConvBn*d, ConvBnReLU*d) becomes a QAT conv with the BN folded into
  its weight and bias, keeping the SAME weight fake-quant module: in eval mode torch's Conv-BN
  QAT fake-quantizes w·γ/σ, which is the folded weight, so the two are bit-identical;
- every fake-quantized weight is replaced by its fake-quantized value (levels × scale), so the
  exported QuantizeLinear re-rounds nothing. Its range [−127, 127] is then widened to
  [−128, 127] (the only signed range ONNX export takes): exact, since no level is −128.
"""

from __future__ import annotations

import copy
from typing import Any


def freeze(model: Any) -> Any:
    """The exportable copy of `model` (the original is not touched)."""
    from torch.ao.quantization import disable_observer, enable_fake_quant

    frozen = copy.deepcopy(model).eval()
    frozen.apply(disable_observer)
    frozen.apply(enable_fake_quant)
    _fold_conv_bn(frozen)
    _bake_weights(frozen)
    return frozen


def reference(model: Any) -> Any:
    """A copy of the fake-quant model itself, as verification runs it: eval, observers off."""
    from torch.ao.quantization import disable_observer, enable_fake_quant

    ref = copy.deepcopy(model).eval()
    ref.apply(disable_observer)
    ref.apply(enable_fake_quant)
    return ref


def weight_modules(model: Any) -> list[tuple[str, Any]]:
    """(name, module) of every module holding a fake-quantized weight."""
    return [
        (n, m)
        for n, m in model.named_modules()
        if hasattr(m, "weight_fake_quant") and getattr(m, "weight", None) is not None
    ]


def _fold_conv_bn(model: Any) -> None:
    import torch.ao.nn.intrinsic.qat as nniqat
    from torch import nn

    conv_bn = (
        nniqat.ConvBn1d,
        nniqat.ConvBn2d,
        nniqat.ConvBn3d,
        nniqat.ConvBnReLU1d,
        nniqat.ConvBnReLU2d,
        nniqat.ConvBnReLU3d,
    )
    for name, mod in list(model.named_modules()):
        if not isinstance(mod, conv_bn):
            continue
        fused = mod.to_float()
        conv = fused[0] if isinstance(fused, nn.Sequential) else fused
        qat = _qat_conv(conv, mod)
        new = nn.Sequential(qat, nn.ReLU()) if isinstance(fused, nn.Sequential) else qat
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, new)


def _qat_conv(conv: Any, conv_bn: Any) -> Any:
    """A torch.ao.nn.qat conv with `conv`'s folded weights and `conv_bn`'s weight fake-quant."""
    import torch.ao.nn.qat as nnqat
    from torch import nn

    kinds = {nn.Conv1d: nnqat.Conv1d, nn.Conv2d: nnqat.Conv2d, nn.Conv3d: nnqat.Conv3d}
    conv.qconfig = conv_bn.qconfig
    qat = kinds[type(conv)].from_float(conv)
    qat.weight_fake_quant = conv_bn.weight_fake_quant
    return qat.eval()


def _bake_weights(model: Any) -> None:
    import torch

    with torch.no_grad():
        for _, mod in weight_modules(model):
            fq = mod.weight_fake_quant
            mod.weight.copy_(fq(mod.weight))
            if int(fq.quant_min) == -127 and int(fq.quant_max) == 127:
                fq.quant_min = fq.activation_post_process.quant_min = -128
