"""A 1-D convolutional keyword-spotting net over log-mel features (NCW: mel bins as channels)."""

from __future__ import annotations

import torch
from torch import nn

from models._zoo import Sample, register, spec


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1):
    return nn.Sequential(
        nn.Conv1d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm1d(cout),
        nn.ReLU(),
    )


class KwsConv1d(nn.Module):
    """Conv1d stem, two depthwise-separable stages, global average pool over time, linear head."""

    def __init__(self, mels: int = 40, num_classes: int = 12) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn_relu(mels, 64, 5, 2),
            _conv_bn_relu(64, 64, 3, groups=64),
            _conv_bn_relu(64, 96, 1),
            _conv_bn_relu(96, 96, 3, 2, groups=96),
            _conv_bn_relu(96, 128, 1),
        )
        self.head = nn.Linear(128, num_classes)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(audio).mean(dim=2))


@register(
    "kws_conv1d",
    tags={"cnn", "audio", "small"},
    inputs=(spec("audio", (1, 40, 98), "NCW"),),
    outputs=(spec("logits", (1, 12)),),
    description="keyword spotting: Conv1d over [batch, 40 mel channels, 98 frames], 12 classes",
)
def build() -> Sample:
    """KWS net with a 1x40x98 log-mel input."""
    return KwsConv1d(), (torch.randn(1, 40, 98),)
