"""Building the torch model a `FuzzSpec` describes, with seeded weights and inputs."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from models.fuzz.family_layers import (
    THRESHOLD_SAMPLES,
    THRESHOLD_SEED,
    Branch,
    ConstantOutput,
    Recurrent,
    place_thresholds,
)
from models.fuzz.spec import FuzzSpec, Layer, Shape


class _Fn(nn.Module):
    """A parameter-free layer (add, mul, concat, reshape, ...), named for error messages."""

    def __init__(self, op: str, params: dict[str, Any]) -> None:
        super().__init__()
        self.op, self.params = op, params

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        op, p = self.op, self.params
        if op == "add":
            return xs[0] + xs[1]
        if op == "mul":
            return xs[0] * xs[1]
        if op == "concat":
            return torch.cat(xs[:2], dim=p["dim"])
        if op == "reshape":
            return xs[0].reshape(p["shape"])
        if op == "flatten":
            return torch.flatten(xs[0], 1)
        if op == "transpose":
            return xs[0].permute(*p["perm"])
        if op == "gap":
            return xs[0].mean(dim=tuple(range(2, xs[0].dim())), keepdim=True)
        raise ValueError(f"unknown op {op!r}")


class _Const(nn.Module):
    def __init__(self, kind: str, shape: Shape) -> None:
        super().__init__()
        self.kind = kind
        init = torch.rand(shape) + 0.5 if kind == "mul" else torch.randn(shape) * 0.5
        self.value = nn.Parameter(init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.value if self.kind == "mul" else x + self.value


class _Softmax(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, self.dim)


def _activation(p: dict[str, Any], shape: Shape) -> nn.Module:
    kind = p["kind"]
    simple = {
        "relu": nn.ReLU,
        "relu6": nn.ReLU6,
        "sigmoid": nn.Sigmoid,
        "tanh": nn.Tanh,
        "hardswish": nn.Hardswish,
        "hardsigmoid": nn.Hardsigmoid,
        "gelu": nn.GELU,
        "silu": nn.SiLU,
        "elu": nn.ELU,
    }
    if kind in simple:
        return simple[kind]()
    if kind == "leaky_relu":
        return nn.LeakyReLU(0.1)
    if kind == "softmax":
        return _Softmax(p["dim"])
    if kind == "prelu":
        channels = shape[1] if len(shape) > 1 else 1
        return nn.PReLU(channels, init=0.2)
    raise ValueError(f"unknown activation {kind!r}")


def _norm(p: dict[str, Any], shape: Shape) -> nn.Module:
    kind, c = p["kind"], shape[1]
    if kind == "batch":
        return nn.BatchNorm2d(c) if len(shape) == 4 else nn.BatchNorm1d(c)
    if kind == "layer":
        return nn.LayerNorm(shape[-1])
    if kind == "group":
        return nn.GroupNorm(p["groups"], c)
    if kind == "instance":
        return nn.InstanceNorm2d(c, affine=True)
    raise ValueError(f"unknown norm {kind!r}")


def _conv(p: dict[str, Any], shape: Shape) -> nn.Module:
    cls = nn.Conv2d if len(shape) == 4 else nn.Conv1d
    return cls(
        shape[1],
        p["out"],
        p["k"],
        stride=p["stride"],
        padding=p["pad"],
        dilation=p["dilation"],
        groups=p["groups"],
        bias=p["bias"],
    )


def _pool(op: str, p: dict[str, Any], shape: Shape) -> nn.Module:
    two_d = len(shape) == 4
    if op == "maxpool":
        return (nn.MaxPool2d if two_d else nn.MaxPool1d)(p["k"], p["stride"], p["pad"])
    return (nn.AvgPool2d if two_d else nn.AvgPool1d)(p["k"], p["stride"], p["pad"])


def _module(layer: Layer, shape: Shape) -> nn.Module:
    op, p = layer.op, layer.params
    if op in ("conv", "dwconv"):
        return _conv(p, shape)
    if op == "linear":
        return nn.Linear(shape[-1], p["out"], bias=p["bias"])
    if op in ("maxpool", "avgpool"):
        return _pool(op, p, shape)
    if op == "act":
        return _activation(p, shape)
    if op == "norm":
        return _norm(p, shape)
    if op == "const":
        return _Const(p["kind"], tuple(p["shape"]))
    if op == "branch":
        return Branch(p)
    if op == "rnn":
        return Recurrent(p, shape)
    if op == "constant":
        return ConstantOutput(p["kind"], tuple(p["shape"]))
    return _Fn(op, p)


class FuzzNet(nn.Module):
    """The model a `FuzzSpec` describes; `layers[j]` computes tensor len(inputs) + j."""

    def __init__(self, spec: FuzzSpec) -> None:
        super().__init__()
        self.spec = spec
        shapes = spec.shapes()
        self.layers = nn.ModuleList(_module(ly, shapes[ly.inputs[0]]) for ly in spec.layers)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        values = list(xs)
        for layer, module in zip(self.spec.layers, self.layers, strict=True):
            values.append(module(*(values[i] for i in layer.inputs)))
        outs = tuple(values[i] for i in self.spec.outputs)
        return outs[0] if len(outs) == 1 else outs


def _randomise_norms(model: nn.Module, gen: torch.Generator) -> None:
    """Non-default statistics and affine parameters, so folding bugs change the numbers."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_var is not None:
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
        if getattr(m, "weight", None) is not None and isinstance(
            m, nn.modules.batchnorm._BatchNorm | nn.GroupNorm | nn.LayerNorm | nn.InstanceNorm2d
        ):
            m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
            m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.2)


def build(spec: FuzzSpec) -> tuple[FuzzNet, tuple[torch.Tensor, ...]]:
    """The eval-mode float32 model and seeded example inputs; the caller's RNG is untouched."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(spec.seed)
        model = FuzzNet(spec).eval()
        gen = torch.Generator().manual_seed(spec.seed + 1)
        _randomise_norms(model, gen)
        if any(ly.op == "branch" for ly in spec.layers):
            samples = random_inputs(spec, spec.seed + THRESHOLD_SEED, THRESHOLD_SAMPLES)
            place_thresholds(model, spec, samples)
        inputs = tuple(torch.randn(s, generator=gen) for s in spec.inputs)
    return model, inputs


def random_inputs(spec: FuzzSpec, seed: int, n: int) -> list[tuple[np.ndarray, ...]]:
    """`n` standard-normal input tuples for `spec` (calibration or fresh test data)."""
    rng = np.random.default_rng(seed)
    return [tuple(rng.standard_normal(s).astype(np.float32) for s in spec.inputs) for _ in range(n)]
