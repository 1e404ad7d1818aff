"""A small UNet segmenter: max-pool encoder, decoder with upsampling and skip concatenations."""

from __future__ import annotations

import torch
from torch import nn

from models._layers import ConvBNAct
from models._zoo import Sample, register, spec


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(ConvBNAct(cin, cout), ConvBNAct(cout, cout))


class UNetSmall(nn.Module):
    """Three-level UNet. One decoder stage upsamples with ConvTranspose2d, the other with
    nearest-neighbour nn.Upsample, so both lowering paths are exercised."""

    def __init__(self, cin: int = 3, classes: int = 4, width: int = 16) -> None:
        super().__init__()
        w = width
        self.enc1 = _double_conv(cin, w)
        self.enc2 = _double_conv(w, 2 * w)
        self.bottleneck = _double_conv(2 * w, 4 * w)
        self.pool = nn.MaxPool2d(2)
        self.up2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2)
        self.dec2 = _double_conv(4 * w, 2 * w)
        self.up1 = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"), ConvBNAct(2 * w, w, 1)
        )
        self.dec1 = _double_conv(2 * w, w)
        self.out = nn.Conv2d(w, classes, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(image)
        e2 = self.enc2(self.pool(e1))
        b = self.bottleneck(self.pool(e2))
        d2 = self.dec2(torch.cat([self.up2(b), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
        return self.out(d1)


@register(
    "unet_small",
    tags={"cnn", "image", "segmentation", "small"},
    inputs=(spec("image", (1, 3, 64, 64), "NCHW"),),
    outputs=(spec("mask", (1, 4, 64, 64), "NCHW"),),
    description="UNet 64x64 → 4-class mask: max-pool encoder, ConvTranspose/Upsample, skip concats",
)
def build() -> Sample:
    """UNet with a 1x3x64x64 image."""
    return UNetSmall(), (torch.randn(1, 3, 64, 64),)
