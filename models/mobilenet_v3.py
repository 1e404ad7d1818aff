"""MobileNetV3-Small: hardswish, hardsigmoid squeeze-excite, 3x3 and 5x5 depthwise convs."""

from __future__ import annotations

import torch
from torch import nn

from models._layers import ConvBNAct, make_divisible
from models._zoo import Sample, register, spec

#: (kernel, expanded channels, output channels, squeeze-excite, hardswish, stride), Table 2.
_CONFIG = (
    (3, 16, 16, True, False, 2),
    (3, 72, 24, False, False, 2),
    (3, 88, 24, False, False, 1),
    (5, 96, 40, True, True, 2),
    (5, 240, 40, True, True, 1),
    (5, 240, 40, True, True, 1),
    (5, 120, 48, True, True, 1),
    (5, 144, 48, True, True, 1),
    (5, 288, 96, True, True, 2),
    (5, 576, 96, True, True, 1),
    (5, 576, 96, True, True, 1),
)


class SqueezeExcite(nn.Module):
    """x * hardsigmoid(fc2(relu(fc1(global_avg_pool(x))))), with 1x1 convs as the fcs."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        squeezed = make_divisible(channels / 4)
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.fc2 = nn.Conv2d(squeezed, channels, 1)
        self.relu = nn.ReLU()
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.relu(self.fc1(s))))


class Bneck(nn.Module):
    """MobileNetV3 bottleneck: expand → depthwise → (SE) → project, residual if shapes match."""

    def __init__(self, cin: int, cfg: tuple[int, int, int, bool, bool, int]) -> None:
        super().__init__()
        kernel, hidden, cout, use_se, hswish, stride = cfg
        act = nn.Hardswish if hswish else nn.ReLU
        layers: list[nn.Module] = []
        if hidden != cin:
            layers.append(ConvBNAct(cin, hidden, 1, act=act))
        layers.append(ConvBNAct(hidden, hidden, kernel, stride, groups=hidden, act=act))
        if use_se:
            layers.append(SqueezeExcite(hidden))
        layers.append(ConvBNAct(hidden, cout, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


class MobileNetV3Small(nn.Module):
    """MobileNetV3-Small classifier for NCHW images."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvBNAct(3, 16, 3, 2, act=nn.Hardswish)]
        cin = 16
        for cfg in _CONFIG:
            layers.append(Bneck(cin, cfg))
            cin = cfg[2]
        layers.append(ConvBNAct(cin, 576, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(576, 1024), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(1024, num_classes)
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(image).mean(dim=(2, 3)))


@register(
    "mobilenet_v3_small",
    tags={"cnn", "image"},
    inputs=(spec("image", (1, 3, 224, 224), "NCHW"),),
    outputs=(spec("logits", (1, 1000)),),
    description="MobileNetV3-Small at 224: hardswish, hardsigmoid squeeze-excite, 5x5 depthwise",
)
def build() -> Sample:
    """MobileNetV3-Small with a 1x3x224x224 image."""
    return MobileNetV3Small(), (torch.randn(1, 3, 224, 224),)
