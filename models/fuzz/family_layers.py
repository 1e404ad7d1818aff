"""Torch modules for the special families (`families.py`): branch, recurrent, constant output."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from models.fuzz.spec import FuzzSpec, Shape

PATHS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "neg": torch.neg,
    "double": lambda x: 2.0 * x,
    "shift": lambda x: x + 1.0,
    "tanh": torch.tanh,
    "abs": torch.abs,
    "relu": torch.relu,
}
#: Seed offset of the random inputs that place each branch threshold.
THRESHOLD_SEED = 3_000
THRESHOLD_SAMPLES = 64


def statistic(cond: str, c: np.ndarray) -> float:
    """The number a branch compares with its threshold (`any(x > t)` is `max(x) > t`)."""
    if cond == "mean":
        return float(c.mean())
    if cond == "sum":
        return float(c.sum())
    if cond == "any":
        return float(c.max())
    if cond == "item":
        return float(c.reshape(-1)[0])
    raise ValueError(f"unknown branch condition {cond!r}")


class Branch(nn.Module):
    """`then(x) if <condition on c> else other(x)`, decided in Python (a tracing hazard)."""

    def __init__(self, p: dict[str, Any]) -> None:
        super().__init__()
        self.cond, self.percentile = p["cond"], p["percentile"]
        self.then, self.other = PATHS[p["then"]], PATHS[p["else"]]
        self.threshold = 0.0  # placed by `place_thresholds`

    def taken(self, c: torch.Tensor) -> bool:
        """Whether the `then` path runs for condition tensor `c`."""
        t = self.threshold
        if self.cond == "mean":
            return bool(c.mean() > t)
        if self.cond == "sum":
            return bool(c.sum() > t)
        if self.cond == "any":
            return bool(torch.any(c > t))
        return c.reshape(-1)[0].item() > t

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.then(x) if self.taken(c) else self.other(x)


def place_thresholds(
    model: nn.Module, spec: FuzzSpec, samples: Sequence[tuple[np.ndarray, ...]]
) -> None:
    """Set each branch's threshold at its percentile of the condition statistic over
    `samples` (model inputs: the condition reads one), so both paths are taken."""
    for layer, module in zip(spec.layers, model.layers, strict=True):
        if isinstance(module, Branch):
            stats = [statistic(module.cond, s[layer.inputs[1]]) for s in samples]
            module.threshold = float(np.percentile(stats, module.percentile))


class Recurrent(nn.Module):
    """An LSTM or GRU on [batch, time, features], read as Y, h_n, h_n[-1], c_n or Linear."""

    def __init__(self, p: dict[str, Any], shape: Shape) -> None:
        super().__init__()
        cls = nn.LSTM if p["cell"] == "lstm" else nn.GRU
        self.batch_first, self.read = p["batch_first"], p["read"]
        self.rnn = cls(shape[-1], p["hidden"], p["layers"], batch_first=self.batch_first)
        self.head = nn.Linear(p["hidden"], p["out"]) if self.read == "linear_h" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, state = self.rnn(x if self.batch_first else x.transpose(0, 1))
        h = state[0] if isinstance(state, tuple) else state
        if self.read == "y":
            return y if self.batch_first else y.transpose(0, 1)
        if self.read == "h_n":
            return h
        if self.read == "c_n":
            return state[1]
        if self.read == "h_last":
            return h[-1]
        assert self.head is not None
        return self.head(h[-1])


class ConstantOutput(nn.Module):
    """An output that ignores the input: a registered buffer, or a function of a parameter."""

    def __init__(self, kind: str, shape: Shape) -> None:
        super().__init__()
        self.kind = kind
        if kind == "buffer":
            self.register_buffer("anchors", torch.rand(shape) * 4.0)
        else:
            self.weight = nn.Parameter(torch.randn(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "buffer":
            return self.anchors
        return torch.sigmoid(self.weight) * 2.0 - 0.5
