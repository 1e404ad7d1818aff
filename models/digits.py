"""A small CNN for 28x28 grey-scale digits: (conv-BN-ReLU-maxpool) x2, then two fc layers."""

from __future__ import annotations

import torch
from torch import nn

from models._layers import ConvBNAct
from models._zoo import Sample, register, spec


class DigitsCNN(nn.Module):
    """MNIST-style classifier for 1x28x28 images."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            ConvBNAct(1, 16), nn.MaxPool2d(2), ConvBNAct(16, 32), nn.MaxPool2d(2)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, num_classes)
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(image))


@register(
    "digits_cnn",
    tags={"cnn", "image", "small"},
    inputs=(spec("image", (1, 1, 28, 28), "NCHW"),),
    outputs=(spec("logits", (1, 10)),),
    description="digits CNN on 1x28x28: two conv-BN-ReLU-maxpool stages, flatten, two fc",
)
def build() -> Sample:
    """Digits CNN with a 1x1x28x28 image."""
    return DigitsCNN(), (torch.randn(1, 1, 28, 28),)
