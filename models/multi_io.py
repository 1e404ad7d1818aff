"""A two-input, two-output model whose input and output order both matter.

The declared order is inputs (image, context) and outputs (logits, embedding). Sorting either
list by name reverses it ("context" < "image", "embedding" < "logits"), so a converter that
reorders tensors by name, or by index in its own graph, feeds or returns the wrong tensor. The
shapes differ, and the context modulates the image features (FiLM), so a swap cannot pass
silently. The embedding is also consumed internally by the logits head, so it is an output that
is not a graph leaf.
"""

from __future__ import annotations

import torch
from torch import nn

from models._layers import ConvBNAct
from models._zoo import Sample, register, spec


class MultiIO(nn.Module):
    """Small CNN on the image, FiLM-modulated by an MLP on the context vector."""

    def __init__(self, context: int = 16, embed: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        self.cnn = nn.Sequential(
            ConvBNAct(3, 16, 3, 2), ConvBNAct(16, embed, 3, 2), ConvBNAct(embed, embed, 3)
        )
        self.film = nn.Sequential(nn.Linear(context, 32), nn.ReLU(), nn.Linear(32, 2 * embed))
        self.head = nn.Linear(embed, num_classes)
        self.context_head = nn.Linear(context, num_classes)

    def forward(self, image: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = self.cnn(image).mean(dim=(2, 3))
        scale, shift = self.film(context).chunk(2, dim=1)
        embedding = feats * (1.0 + scale) + shift
        logits = self.head(torch.relu(embedding)) + self.context_head(context)
        return logits, embedding


@register(
    "multi_io",
    tags={"cnn", "image", "multi_io", "small"},
    inputs=(spec("image", (1, 3, 32, 32), "NCHW"), spec("context", (1, 16))),
    outputs=(spec("logits", (1, 10)), spec("embedding", (1, 32))),
    description="image + context vector → logits + embedding; name order ≠ declared order",
)
def build() -> Sample:
    """Multi-IO model with a 1x3x32x32 image and a 1x16 context vector."""
    return MultiIO(), (torch.randn(1, 3, 32, 32), torch.randn(1, 16))
