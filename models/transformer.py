"""A small transformer encoder over [batch, time, features]; the 3-D tensors are not NCW."""

from __future__ import annotations

import torch
from torch import nn

from models._layers import EncoderBlock
from models._zoo import Sample, register, spec


class TransformerEncoder(nn.Module):
    """Learned positional embedding, two pre-LN blocks (explicit attention), final LayerNorm."""

    def __init__(self, steps: int = 16, dim: int = 32, depth: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(0.1 * torch.randn(1, steps, dim))
        self.blocks = nn.Sequential(*(EncoderBlock(dim, heads) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)

    def forward(self, sequence: torch.Tensor) -> torch.Tensor:
        return self.norm(self.blocks(sequence + self.pos_embed))


@register(
    "transformer_encoder",
    tags={"transformer", "sequence", "small"},
    inputs=(spec("sequence", (1, 16, 32)),),
    outputs=(spec("features", (1, 16, 32)),),
    description="2-layer transformer encoder on [batch, 16 steps, 32 features]; never transpose",
)
def build() -> Sample:
    """Transformer encoder with a 1x16x32 sequence."""
    return TransformerEncoder(), (torch.randn(1, 16, 32),)
