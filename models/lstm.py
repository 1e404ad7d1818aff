"""Recurrent sequence models over [batch, time, features]: the zoo's LSTM classifier, and the
encoders that read the final hidden state (speaker / keyword embeddings) used by the tests."""

from __future__ import annotations

import torch
from torch import nn

from models._zoo import Sample, register, spec

#: What a `RecurrentEncoder` returns: its output sequence, a head on the last layer's final
#: hidden state (`fc(h_n[-1])`), h_n itself, or (h_n, c_n) (LSTM only).
READS = ("sequence", "head", "h_n", "h_c")


class LstmClassifier(nn.Module):
    """Two-layer LSTM (hidden 64); a linear head reads the last time step."""

    def __init__(self, features: int = 32, hidden: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, sequence: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(sequence)
        return self.head(out[:, -1])


class RecurrentEncoder(nn.Module):
    """A stacked LSTM or GRU over [batch, time, features]; `read` picks what it returns.

    With `batch_first=False` the input stays [batch, time, features] and is transposed to the
    layer's [time, batch, features] inside, so every variant has the same I/O.
    """

    def __init__(
        self,
        kind: str = "lstm",
        *,
        layers: int = 3,
        read: str = "head",
        batch_first: bool = True,
        bidirectional: bool = False,
        sizes: tuple[int, int, int] = (16, 32, 8),
    ) -> None:
        super().__init__()
        if read not in READS or (read == "h_c" and kind != "lstm"):
            raise ValueError(f"read must be one of {READS} (h_c for an LSTM), not {read!r}")
        features, hidden, classes = sizes
        layer = {"lstm": nn.LSTM, "gru": nn.GRU}[kind]
        self.kind, self.read, self.batch_first = kind, read, batch_first
        self.rnn = layer(
            features,
            hidden,
            num_layers=layers,
            batch_first=batch_first,
            bidirectional=bidirectional,
        )
        self.fc = nn.Linear(hidden * (2 if bidirectional else 1), classes)

    def forward(self, sequence: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        x = sequence if self.batch_first else sequence.transpose(0, 1)
        y, state = self.rnn(x)
        h = state[0] if self.kind == "lstm" else state
        if self.read == "sequence":
            return y if self.batch_first else y.transpose(0, 1)
        if self.read == "h_n":
            return h
        if self.read == "h_c":
            return state
        last = torch.cat([h[-2], h[-1]], dim=-1) if self.rnn.bidirectional else h[-1]
        return self.fc(last)


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
