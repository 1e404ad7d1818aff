"""A tiny torch.ao FX QAT model (Conv-BN-ReLU, mean, Linear) for the freeze and rule tests."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import bridge

X = torch.randn(4, 2, 6, 6, generator=torch.Generator().manual_seed(0))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.c(x).mean((2, 3)))


def prepared(mapping: Any = None, *, weights: Any = None, steps: int = 3) -> nn.Module:
    """Net (its weights edited by `weights(net)` first) prepared with `mapping` (default
    bridge.qat_qconfig_mapping()), observed `steps` times in train mode so BN statistics and
    every scale are set."""
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    torch.manual_seed(0)
    net = Net()
    if weights is not None:
        with torch.no_grad():
            weights(net)
    model = prepare_qat_fx(net.train(), mapping or bridge.qat_qconfig_mapping(), (X[:1],))
    with torch.no_grad():
        for _ in range(steps):
            model(X)
    return model


def mapping(*, weight: dict[str, Any] | None = None, act: dict[str, Any] | None = None) -> Any:
    """bridge's QConfigMapping with some fake-quant arguments replaced."""
    from torch.ao.quantization import (
        FakeQuantize,
        MovingAverageMinMaxObserver,
        MovingAveragePerChannelMinMaxObserver,
        QConfig,
        QConfigMapping,
    )

    a = {"observer": MovingAverageMinMaxObserver, "quant_min": 0, "quant_max": 255,
         "dtype": torch.quint8, **(act or {})}  # fmt: skip
    w = {"observer": MovingAveragePerChannelMinMaxObserver, "quant_min": -127, "quant_max": 127,
         "dtype": torch.qint8, "qscheme": torch.per_channel_symmetric, "ch_axis": 0,
         **(weight or {})}  # fmt: skip
    qconfig = QConfig(activation=FakeQuantize.with_args(**a), weight=FakeQuantize.with_args(**w))
    return QConfigMapping().set_global(qconfig)
