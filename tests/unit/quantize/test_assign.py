"""assign_qparams: one QParams per planned tensor, decided without writing or mutating anything."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from bridge.quantize.assign import assign_qparams
from bridge.quantize.calibrate import calibrate
from bridge.quantize.config import QuantConfig
from bridge.quantize.plan import build_plan
from bridge.quantize.qdq import quantize_model

from .conftest import activation_qparams, export, random_samples


class _ReluSigmoid(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(torch.relu(self.conv(x)))


def test_assigned_qparams_are_what_the_qdq_model_holds() -> None:
    art = export(_ReluSigmoid().eval(), (1, 3, 8, 8))
    config = QuantConfig(mode="int8", observer="minmax")
    observers = calibrate(art, random_samples(art, 4), config)
    plan = build_plan(art.model, config, observers=observers)
    before = repr(plan)
    got = assign_qparams(plan, observers, model=art.model, config=config)
    assert repr(plan) == before  # pure: the plan is read, not changed
    written = activation_qparams(quantize_model(art, observers, config).model)
    written = {t.removesuffix("_float"): v for t, v in written.items()}  # graph output "y"
    assert set(got.qparams) == set(written)
    for t, qp in got.qparams.items():
        assert (float(qp.scale[0]), int(qp.zero_point[0])) == written[t], t
    sig = next(t for t in got.qparams if t in plan.fixed)  # Sigmoid's fixed (1/256, -128)
    assert (float(got.qparams[sig].scale[0]), int(got.qparams[sig].zero_point[0])) == (
        1 / 256,
        -128,
    )
    relu = next(t for t in got.qparams if t in observers and t not in plan.fixed)
    lo, hi = observers[relu].range()
    np.testing.assert_allclose(got.ranges[relu], (min(lo, 0.0), hi))
