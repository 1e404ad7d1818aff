"""EfficientNet-Lite0: MBConv blocks with ReLU6 and no squeeze-excite, TF "SAME" padding.

TensorFlow's "SAME" padding for a stride-2 convolution on an even-sized input is asymmetric
(more at the bottom/right). PyTorch's Conv2d pads symmetrically, so every stride-2 conv here is
preceded by an explicit `F.pad`, which exports as an ONNX Pad node:

    out = ceil(size / stride);  total = max((out - 1) * stride + kernel - size, 0)
    before = total // 2;        after = total - before
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from models._layers import ConvBNAct
from models._zoo import Sample, register, spec

#: (expansion, kernel, first stride, output channels, repeats) for Lite0 (width = depth = 1.0).
_CONFIG = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" (before, after) padding of one spatial axis of length `size`."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConvBNAct(nn.Module):
    """Conv-BN-ReLU6 with TF "SAME" padding; asymmetric pads become an explicit F.pad."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, size: int, groups: int = 1):
        super().__init__()
        before, after = same_pads(size, kernel, stride)
        self.pads = (before, after, before, after)  # F.pad order: left, right, top, bottom
        self.conv = nn.Conv2d(cin, cout, kernel, stride, 0, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pads):
            x = F.pad(x, self.pads)
        return self.act(self.bn(self.conv(x)))


class MBConv(nn.Module):
    """1x1 expand → kxk depthwise (SAME) → 1x1 projection; residual when shapes match."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int, size: int):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNAct(cin, hidden, 1, act=nn.ReLU6))
        layers += [
            SameConvBNAct(hidden, hidden, kernel, stride, size, groups=hidden),
            ConvBNAct(hidden, cout, 1, act=None),
        ]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 for a fixed square image size (the SAME pads depend on it)."""

    def __init__(self, image_size: int = 224, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [SameConvBNAct(3, 32, 3, 2, image_size)]
        size, cin = math.ceil(image_size / 2), 32
        for expand, kernel, stride, cout, repeats in _CONFIG:
            for i in range(repeats):
                s = stride if i == 0 else 1
                layers.append(MBConv(cin, cout, expand, kernel, s, size))
                size, cin = math.ceil(size / s), cout
        layers.append(ConvBNAct(cin, 1280, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(image).mean(dim=(2, 3)))


@register(
    "efficientnet_lite0",
    tags={"cnn", "image"},
    inputs=(spec("image", (1, 3, 224, 224), "NCHW"),),
    outputs=(spec("logits", (1, 1000)),),
    description="EfficientNet-Lite0 at 224: MBConv, ReLU6, no SE, TF SAME padding as Pad ops",
)
def build() -> Sample:
    """EfficientNet-Lite0 with a 1x3x224x224 image."""
    return EfficientNetLite0(224), (torch.randn(1, 3, 224, 224),)
