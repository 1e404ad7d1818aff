"""Drawing the model families beyond plain layer graphs, each a hazard for a tracing converter.

- `branch`: a data-dependent Python `if` (`x.mean() > t`, `x.sum() > t`, `torch.any(x > t)`,
  `x.reshape(-1)[0].item() > t`) choosing between two different element-wise paths. The
  condition reads a model input, and `build` sets t at a percentile (30-70) of the condition's
  statistic over seeded random inputs, so both paths are taken on the input distribution.
- `recurrent`: `nn.LSTM` / `nn.GRU` (1-3 layers, batch_first either way) on a [batch, time,
  features] input, read as the sequence output Y, h_n, h_n[-1], c_n or Linear(h_n[-1]).
- `constant`: an extra output that does not depend on the input: a registered buffer (detection
  anchors) or a value computed from parameters only.
"""

from __future__ import annotations

from typing import Any

from models.fuzz.sources import Source
from models.fuzz.spec import FuzzSpec, Layer, Limits, Shape

FAMILIES = ("plain", "branch", "recurrent", "constant")
#: Statistics a branch condition compares with its threshold.
CONDITIONS = ("mean", "sum", "any", "item")
#: Element-wise paths a branch chooses between (names of `family_layers.PATHS`).
PATHS = ("neg", "double", "shift", "tanh", "abs", "relu")
RNN_CELLS = ("lstm", "gru")
#: How an rnn layer's result is read; "c_n" only for an LSTM.
RNN_READS = ("h_n", "h_last", "linear_h", "y", "c_n")
CONSTANT_KINDS = ("buffer", "param")


def family_of(spec: FuzzSpec) -> str:
    """The family a spec belongs to, from its layers."""
    ops = {layer.op for layer in spec.layers}
    for family, op in (("branch", "branch"), ("recurrent", "rnn"), ("constant", "constant")):
        if op in ops:
            return family
    return "plain"


def draw_family(src: Source, lim: Limits) -> str:
    """ "plain", or a special family with the share `lim` gives it (in %)."""
    roll = src.integer(0, 99)
    shares = lim.family_shares()
    edge = 100 - sum(shares.values())
    if roll < edge:
        return "plain"
    for name, share in shares.items():
        edge += share
        if roll < edge:
            return name
    return "plain"


def draw_branch(src: Source, n_inputs: int, data: int) -> Layer:
    """A branch on tensor `data` whose condition reads a model input."""
    cond = src.integer(0, n_inputs - 1)
    then = src.choice(PATHS)
    other = src.choice(tuple(p for p in PATHS if p != then))
    params = {
        "cond": src.choice(CONDITIONS),
        "percentile": src.integer(30, 70),
        "then": then,
        "else": other,
    }
    return Layer("branch", (data, cond), params)


def draw_rnn(src: Source, x: Shape, lim: Limits) -> dict[str, Any]:
    """An LSTM or GRU on a [batch, time, features] tensor and how its result is read."""
    cell = src.choice(RNN_CELLS)
    reads = RNN_READS if cell == "lstm" else RNN_READS[:-1]
    params: dict[str, Any] = {
        "cell": cell,
        "hidden": src.integer(2, lim.max_channels),
        "layers": src.integer(1, 3),
        "batch_first": src.flag(50),
        "read": src.choice(reads),
    }
    if params["read"] == "linear_h":
        params["out"] = src.integer(1, 2 * lim.max_channels)
    return params


def draw_constant(src: Source, lim: Limits) -> dict[str, Any]:
    """A constant output: anchors-like [A, 4], [1, A, 4] or [1, A]."""
    a = src.integer(2, lim.max_channels)
    shape = src.choice(((a, 4), (1, a, 4), (1, a)))
    return {"kind": src.choice(CONSTANT_KINDS), "shape": shape}
