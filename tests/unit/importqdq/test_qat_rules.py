"""importqdq.qat_rules: a frozen QAT model whose QConfig TFLite cannot run exactly is refused
with a QdqRuleError naming the module and the rule; bridge's own QConfig passes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bridge.errors import QdqRuleError
from bridge.importqdq.qat_freeze import freeze
from bridge.importqdq.qat_rules import ADVICE, check
from tests.unit.importqdq.qatnets import mapping, prepared

pytest.importorskip("torch.ao.quantization.quantize_fx")


def _refusal(model: nn.Module) -> QdqRuleError:
    with pytest.raises(QdqRuleError) as e:
        check(freeze(model))
    assert str(e.value).endswith(ADVICE)
    return e.value


def test_bridges_qconfig_passes() -> None:
    check(freeze(prepared()))


def test_asymmetric_weights_are_refused() -> None:
    e = _refusal(prepared(mapping(weight={"qscheme": torch.per_channel_affine})))
    assert (e.node, e.rule) == ("c.0.0", "weight_symmetric")
    assert str(e).startswith("QAT module 'c.0.0': weight fake-quant is torch.qint8 ")


def test_per_channel_scales_off_axis_0_are_refused() -> None:
    e = _refusal(prepared(mapping(weight={"ch_axis": 1})))
    assert e.rule == "weight_symmetric" and "on axis 1, not 0" in str(e)


def _mirrored(sign: float):
    """Every channel spans [−0.5, 0.5] around values in ±0.1, its extreme of sign `sign` reached
    by one weight and the other only to 0.49. Over [−128, 127] a symmetric scale is
    max|w| / 127.5: a −0.5 (sign −1) rounds to level −128, while 0.5 (sign +1) is 127.5 → 128,
    clamped to 127, and −0.49 stays at −125. BN's running statistics are held (momentum 0) so
    the folded weights the observers saw are the ones frozen."""

    def edit(net: nn.Module) -> None:
        net.c[1].momentum = 0.0
        for w in (net.c[0].weight, net.fc.weight):
            flat = w.view(w.shape[0], -1)
            flat.clamp_(-0.1, 0.1)
            flat[:, 0], flat[:, 1] = 0.5 * sign, -0.49 * sign

    return edit


def test_a_weight_at_level_minus_128_is_refused() -> None:
    model = prepared(mapping(weight={"quant_min": -128}), weights=_mirrored(-1.0))
    assert _refusal(model).rule == "weight_range"


def test_the_same_range_without_a_level_at_minus_128_passes() -> None:
    check(freeze(prepared(mapping(weight={"quant_min": -128}), weights=_mirrored(1.0))))


def test_a_narrowed_activation_range_is_refused() -> None:
    e = _refusal(prepared(mapping(act={"quant_max": 127})))
    assert e.rule == "activation_range" and "in [0, 127]" in str(e)
    assert e.node is not None and e.node.startswith("activation_post_process_")


def test_a_model_with_no_activation_fake_quant_is_refused() -> None:
    from torch.ao.nn.qat import Linear

    qconfig = mapping().global_qconfig
    model = nn.Sequential(Linear(4, 2, qconfig=qconfig))
    model[0].weight_fake_quant(model[0].weight)  # observe the weight once
    e = _refusal(model)
    assert e.rule == "activation_quantized" and e.node is None
