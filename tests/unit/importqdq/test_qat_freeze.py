"""importqdq.qat_freeze: the frozen copy computes exactly what the fake-quant model computes,
with Conv-BN folded and every weight baked onto its integer grid in [−127, 127]; the original
model is not touched."""

from __future__ import annotations

import pytest
import torch
from torch.ao.nn.intrinsic import qat as nniqat

from bridge.importqdq.qat_freeze import freeze, reference, weight_modules
from tests.unit.importqdq.qatnets import X, prepared

pytest.importorskip("torch.ao.quantization.quantize_fx")


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return prepared()


def test_freeze_computes_exactly_what_the_fake_quant_model_does(model: torch.nn.Module) -> None:
    with torch.no_grad():
        want, got = reference(model)(X), freeze(model)(X)
    assert torch.equal(got, want)


def test_freeze_folds_conv_bn_and_leaves_the_original(model: torch.nn.Module) -> None:
    state = {k: v.clone() for k, v in model.state_dict().items()}
    frozen = freeze(model)
    assert not any(isinstance(m, nniqat.ConvBnReLU2d) for m in frozen.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in frozen.modules())
    assert isinstance(model.get_submodule("c.0"), nniqat.ConvBnReLU2d) and model.training
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert not frozen.training


def test_weights_are_baked_on_their_grid(model: torch.nn.Module) -> None:
    frozen = freeze(model)
    names = [n for n, _ in weight_modules(frozen)]
    assert names == ["c.0.0", "fc"]
    for _, mod in weight_modules(frozen):
        fq = mod.weight_fake_quant
        w = mod.weight.detach()
        with torch.no_grad():
            assert torch.equal(fq(w), w)  # export's QuantizeLinear re-rounds nothing
        levels = (w / fq.scale.reshape(-1, *[1] * (w.dim() - 1))).round()
        assert float(levels.min()) >= -127 and float(levels.max()) <= 127
        assert int(fq.quant_min) == -128  # widened for export: no level sits at −128
        assert not bool(fq.observer_enabled) and bool(fq.fake_quant_enabled)


def test_reference_is_an_eval_copy_with_observers_off(model: torch.nn.Module) -> None:
    ref = reference(model)
    assert not ref.training and ref is not model
    scales = [m.scale.clone() for m in ref.modules() if hasattr(m, "observer_enabled")]
    with torch.no_grad():
        ref(X * 100)  # observers off: no scale moves
    after = [m.scale for m in ref.modules() if hasattr(m, "observer_enabled")]
    assert all(torch.equal(a, b) for a, b in zip(scales, after, strict=True))
