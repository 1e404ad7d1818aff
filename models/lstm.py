"""An LSTM sequence classifier over [batch, time, features] (batch_first)."""

from __future__ import annotations

import torch
from torch import nn

from models._zoo import Sample, register, spec


class LstmClassifier(nn.Module):
    """Two-layer LSTM (hidden 64); a linear head reads the last time step."""

    def __init__(self, features: int = 32, hidden: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, sequence: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(sequence)
        return self.head(out[:, -1])


@register(
    "lstm_classifier",
    tags={"sequence", "small"},
    inputs=(spec("sequence", (1, 50, 32)),),
    outputs=(spec("logits", (1, 10)),),
    description="2-layer LSTM (hidden 64) over [batch, 50 steps, 32 features], head on last step",
)
def build() -> Sample:
    """LSTM classifier with a 1x50x32 sequence."""
    return LstmClassifier(), (torch.randn(1, 50, 32),)
