"""ResNet18: basic residual blocks with projection shortcuts."""

from __future__ import annotations

import torch
from torch import nn

from models._layers import ConvBNAct
from models._zoo import Sample, register, spec


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a (1x1 conv-BN projected when shapes change) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(cin, cout, 3, stride)
        self.conv2 = ConvBNAct(cout, cout, 3, act=None)
        self.shortcut = (
            ConvBNAct(cin, cout, 1, stride, act=None)
            if stride != 1 or cin != cout
            else nn.Identity()
        )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet18 classifier for NCHW images."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(ConvBNAct(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1))
        blocks: list[nn.Module] = []
        cin = 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(image))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@register(
    "resnet18",
    tags={"cnn", "image"},
    inputs=(spec("image", (1, 3, 224, 224), "NCHW"),),
    outputs=(spec("logits", (1, 1000)),),
    description="ResNet18 at 224: 7x7 stem, max-pool, basic residual blocks, global pool, fc",
)
def build() -> Sample:
    """ResNet18 with a 1x3x224x224 image."""
    return ResNet18(), (torch.randn(1, 3, 224, 224),)
