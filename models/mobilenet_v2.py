"""MobileNetV2 (width 1.0, 1000 classes): inverted residuals, ReLU6, depthwise convolutions."""

from __future__ import annotations

import torch
from torch import nn

from models._layers import ConvBNAct
from models._zoo import Sample, register, spec

#: (expansion t, output channels c, repeats n, first stride s), from the paper's Table 2.
_CONFIG = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class InvertedResidual(nn.Module):
    """1x1 expand → 3x3 depthwise (both ReLU6) → 1x1 linear projection; residual if shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNAct(cin, hidden, 1, act=nn.ReLU6))
        layers += [
            ConvBNAct(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
            ConvBNAct(hidden, cout, 1, act=None),
        ]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


class MobileNetV2(nn.Module):
    """MobileNetV2 classifier for NCHW images."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvBNAct(3, 32, 3, 2, act=nn.ReLU6)]
        cin = 32
        for t, c, n, s in _CONFIG:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(ConvBNAct(cin, 1280, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.features(image)
        return self.classifier(x.mean(dim=(2, 3)))


@register(
    "mobilenet_v2",
    tags={"cnn", "image"},
    inputs=(spec("image", (1, 3, 224, 224), "NCHW"),),
    outputs=(spec("logits", (1, 1000)),),
    description="MobileNetV2 1.0 at 224: inverted residuals, ReLU6, depthwise convs",
)
def build() -> Sample:
    """MobileNetV2 with a 1x3x224x224 image."""
    return MobileNetV2(), (torch.randn(1, 3, 224, 224),)
