"""A tiny Vision Transformer: patchify conv, class token, positional embedding, 3 encoder blocks."""

from __future__ import annotations

import torch
from torch import nn

from models._layers import EncoderBlock
from models._zoo import Sample, register, spec


class ViTTiny(nn.Module):
    """ViT classifier: 16x16 patches of a 64x64 image → 17 tokens of width `dim`."""

    def __init__(
        self,
        image_size: int = 64,
        patch: int = 16,
        dim: int = 64,
        depth: int = 3,
        heads: int = 4,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        tokens = (image_size // patch) ** 2 + 1
        self.patchify = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(0.02 * torch.randn(1, 1, dim))
        self.pos_embed = nn.Parameter(0.02 * torch.randn(1, tokens, dim))
        self.blocks = nn.Sequential(*(EncoderBlock(dim, heads) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.patchify(image).flatten(2).transpose(1, 2)  # [B, patches, dim]
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


@register(
    "vit_tiny",
    tags={"transformer", "image", "small"},
    inputs=(spec("image", (1, 3, 64, 64), "NCHW"),),
    outputs=(spec("logits", (1, 10)),),
    description="ViT on 64x64: 16x16 patches, cls token, 3 pre-LN blocks, dim 64, 4 heads",
)
def build() -> Sample:
    """ViT-tiny with a 1x3x64x64 image."""
    return ViTTiny(), (torch.randn(1, 3, 64, 64),)
