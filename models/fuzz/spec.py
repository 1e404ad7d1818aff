"""A fuzz model as plain data: input shapes, layers (op, inputs, params), outputs and a seed.

Tensor i < len(inputs) is model input i; layer j makes tensor len(inputs) + j. Shapes follow
from the layers (`out_shape`), and a spec round-trips through JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

Shape = tuple[int, ...]

ACTIVATIONS = (
    "relu",
    "relu6",
    "leaky_relu",
    "sigmoid",
    "tanh",
    "hardswish",
    "hardsigmoid",
    "gelu",
    "silu",
    "elu",
    "softmax",
    "prelu",
)


@dataclass(frozen=True)
class Limits:
    """Size bounds for generated models (small, so one conversion takes about a second)."""

    max_layers: int = 8
    max_side: int = 12
    max_channels: int = 16
    max_elements: int = 4096
    max_inputs: int = 2
    max_outputs: int = 2
    #: Shares (in %) of the model families beyond plain layer graphs (see `generate.FAMILIES`):
    #: a data-dependent Python branch, a recurrent layer read from its state, a constant output.
    branch_percent: int = 12
    recurrent_percent: int = 12
    constant_percent: int = 12

    def family_shares(self) -> dict[str, int]:
        """Family name → share in %, the special families only ("plain" takes the rest)."""
        return {
            "branch": self.branch_percent,
            "recurrent": self.recurrent_percent,
            "constant": self.constant_percent,
        }


@dataclass(frozen=True)
class Layer:
    """One layer: `op` applied to earlier tensors `inputs` (indices), with JSON-able `params`."""

    op: str
    inputs: tuple[int, ...]
    params: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class FuzzSpec:
    """A whole model. Tensor i < len(inputs) is model input i; layer j makes tensor
    len(inputs) + j. `outputs` index that tensor list; `seed` fixes the weights and inputs."""

    inputs: tuple[Shape, ...]
    layers: tuple[Layer, ...]
    outputs: tuple[int, ...]
    seed: int = 0

    def shapes(self) -> list[Shape]:
        """The shape of every tensor: the inputs, then one per layer."""
        shapes = list(self.inputs)
        for layer in self.layers:
            shapes.append(out_shape(layer, [shapes[i] for i in layer.inputs]))
        return shapes

    def describe(self) -> str:
        """One line: input shapes, then each layer as op(inputs)."""
        n = len(self.inputs)
        parts = [f"in{list(self.inputs)}"]
        parts += [f"t{n + j}={ly.op}{list(ly.inputs)}" for j, ly in enumerate(self.layers)]
        return "; ".join(parts) + f" -> {list(self.outputs)}"

    def key(self) -> str:
        """A canonical string: equal for equal models."""
        return json.dumps(self.to_dict(), sort_keys=True)

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [list(s) for s in self.inputs],
            "layers": [
                {"op": ly.op, "inputs": list(ly.inputs), "params": ly.params} for ly in self.layers
            ],
            "outputs": list(self.outputs),
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FuzzSpec:
        layers = tuple(
            Layer(ly["op"], tuple(ly["inputs"]), _untuple(ly["params"])) for ly in d["layers"]
        )
        return cls(
            tuple(tuple(s) for s in d["inputs"]), layers, tuple(d["outputs"]), int(d["seed"])
        )


def _untuple(params: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}


def _window(n: int, k: int, stride: int, pad: int, dilation: int = 1) -> int:
    return (n + 2 * pad - dilation * (k - 1) - 1) // stride + 1


def out_shape(layer: Layer, ins: Sequence[Shape]) -> Shape:
    """The output shape of `layer` given its input shapes."""
    p, x = layer.params, ins[0]
    op = layer.op
    if op in ("conv", "dwconv"):
        spatial = tuple(_window(n, p["k"], p["stride"], p["pad"], p["dilation"]) for n in x[2:])
        return (x[0], p["out"], *spatial)
    if op in ("maxpool", "avgpool"):
        return (*x[:2], *(_window(n, p["k"], p["stride"], p["pad"]) for n in x[2:]))
    if op == "gap":
        return (*x[:2], *(1 for _ in x[2:]))
    if op == "linear":
        return (*x[:-1], p["out"])
    if op == "concat":
        d = p["dim"]
        return (*x[:d], x[d] + ins[1][d], *x[d + 1 :])
    if op in ("reshape",):
        return tuple(p["shape"])
    if op == "flatten":
        return (x[0], math.prod(x[1:]))
    if op == "transpose":
        return tuple(x[i] for i in p["perm"])
    if op == "rnn":
        return rnn_shape(p, x)
    if op == "constant":
        return tuple(p["shape"])
    return x  # add, mul, const, act, norms and branch keep the first input's shape


def rnn_shape(p: dict[str, Any], x: Shape) -> Shape:
    """The shape an `rnn` layer returns from a [batch, time, features] input, by `p["read"]`."""
    batch, time, hidden = x[0], x[1], p["hidden"]
    read = p["read"]
    if read == "y":
        return (batch, time, hidden)
    if read in ("h_n", "c_n"):
        return (p["layers"], batch, hidden)
    if read == "h_last":
        return (batch, hidden)
    if read == "linear_h":
        return (batch, p["out"])
    raise ValueError(f"unknown rnn read {read!r}")
