"""Random small torch models for fuzzing the converter: chains and DAGs of common layers.

A model is described by a `FuzzSpec` (plain data: input shapes, layers, outputs, seed) drawn
from a `Source` of random choices, then built by `build`. The same drawing code serves
hypothesis (`fuzz_specs()`, which shrinks a failing model to a minimal one) and a seeded
`random.Random` (`RandomSource`). A spec round-trips through JSON, so a failing case can be
stored and rebuilt exactly:

    spec = generate(RandomSource(7))
    model, inputs = build(spec)
    build(FuzzSpec.from_dict(json.loads(json.dumps(spec.to_dict()))))  # the same model

Layers (`OPS`): conv and depthwise conv (1-D and 2-D), linear (on the last axis), add, mul
and concat of two tensors (any earlier tensor of a fitting shape, so graphs branch and
merge), add/mul by a broadcast parameter, max/avg/global pooling, reshape, flatten,
transpose, activations (`ACTIVATIONS`) and norms (batch, layer, group, instance). Shapes are
tracked while drawing, so every spec is a valid model.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np
import torch
from torch import nn

T = TypeVar("T")
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


class Source(Protocol):
    """Where random choices come from (hypothesis' `draw`, or `random.Random`)."""

    def integer(self, lo: int, hi: int) -> int: ...

    def choice(self, options: Sequence[T]) -> T: ...

    def flag(self, percent: int) -> bool: ...


class RandomSource:
    """A `Source` backed by `random.Random(seed)`."""

    def __init__(self, seed: int | str) -> None:
        self.rng = random.Random(seed)

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def choice(self, options: Sequence[T]) -> T:
        return options[self.rng.randrange(len(options))]

    def flag(self, percent: int) -> bool:
        return self.rng.randrange(100) < percent


class HypothesisSource:
    """A `Source` over hypothesis' `draw`.

    Each choice is a wide integer taken modulo the number of options: hypothesis favours
    small and boundary integers, which would make the first options (and the smallest shapes)
    far more common than the rest. Shrinking still moves toward 0: the first option, `lo`,
    and False.
    """

    SPREAD = 2**16

    def __init__(self, draw: Callable[[Any], Any]) -> None:
        from hypothesis import strategies as st

        self.draw, self.wide = draw, st.integers(0, self.SPREAD - 1)

    def _index(self, n: int) -> int:
        return int(self.draw(self.wide)) % n

    def integer(self, lo: int, hi: int) -> int:
        return lo + self._index(hi - lo + 1)

    def choice(self, options: Sequence[T]) -> T:
        return options[self._index(len(options))]

    def flag(self, percent: int) -> bool:
        return self._index(100) >= 100 - percent


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


# --- shapes -------------------------------------------------------------------------------


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
    return x  # add, mul, const, act, norms keep the first input's shape


# --- drawing ------------------------------------------------------------------------------

Drawn = tuple[tuple[int, ...], dict[str, Any]] | None
Drawer = Callable[[Source, int, list[Shape], Limits], Drawn]


def _draw_conv(src: Source, a: int, shapes: list[Shape], lim: Limits) -> Drawn:
    x = shapes[a]
    if len(x) not in (3, 4):
        return None
    c = x[1]
    k = src.choice((1, 3, 5))
    stride = src.choice((1, 2))
    pad = src.choice((0, k // 2))
    dilation = 2 if k > 1 and src.flag(15) else 1
    out = src.integer(1, lim.max_channels)
    groups = 1
    if src.flag(20):
        common = [g for g in range(2, c + 1) if c % g == 0 and out % g == 0]
        groups = src.choice(common) if common else 1
    return (a,), {
        "out": out,
        "k": k,
        "stride": stride,
        "pad": pad,
        "dilation": dilation,
        "groups": groups,
        "bias": src.flag(70),
    }


def _draw_dwconv(src: Source, a: int, shapes: list[Shape], lim: Limits) -> Drawn:
    x = shapes[a]
    if len(x) not in (3, 4):
        return None
    k = src.choice((3, 5, 1))
    mult = 2 if src.flag(20) and 2 * x[1] <= lim.max_channels else 1
    return (a,), {
        "out": x[1] * mult,
        "k": k,
        "stride": src.choice((1, 2)),
        "pad": src.choice((k // 2, 0)),
        "dilation": 1,
        "groups": x[1],
        "bias": src.flag(70),
    }


def _draw_linear(src: Source, a: int, shapes: list[Shape], lim: Limits) -> Drawn:
    return (a,), {"out": src.integer(1, 2 * lim.max_channels), "bias": src.flag(70)}


def _draw_pool(src: Source, a: int, shapes: list[Shape], lim: Limits) -> Drawn:
    if len(shapes[a]) not in (3, 4):
        return None
    k = src.choice((2, 3))
    return (a,), {"k": k, "stride": src.choice((2, 1)), "pad": src.choice((0, k // 2))}


def _draw_gap(src: Source, a: int, shapes: list[Shape], lim: Limits) -> Drawn:
    return ((a,), {}) if len(shapes[a]) in (3, 4) else None


def _draw_binary(src: Source, a: int, shapes: list[Shape], lim: Limits) -> Drawn:
    """add/mul: a second tensor that broadcasts to the first's shape (often the same shape)."""
    x = shapes[a]
    fits = [i for i, s in enumerate(shapes) if _broadcasts(s, x)]
    return (a, src.choice(fits)), {}


def _draw_concat(src: Source, a: int, shapes: list[Shape], lim: Limits) -> Drawn:
    x = shapes[a]
    dims = list(range(1, len(x)))
    dim = src.choice(dims)
    fits = [
        i
        for i, s in enumerate(shapes)
        if len(s) == len(x) and all(s[j] == x[j] for j in range(len(x)) if j != dim)
    ]
    return (a, src.choice(fits)), {"dim": dim}


def _draw_const(src: Source, a: int, shapes: list[Shape], lim: Limits) -> Drawn:
    """Add or multiply by a parameter of the full shape or broadcast along one axis."""
    x = shapes[a]
    axis = src.integer(0, len(x) - 1)
    shape = tuple(n if (i == axis or axis == 0) else 1 for i, n in enumerate(x))
    return (a,), {"kind": src.choice(("mul", "add")), "shape": shape}


def _draw_reshape(src: Source, a: int, shapes: list[Shape], lim: Limits) -> Drawn:
    x = shapes[a]
    n = math.prod(x[1:])
    rank = src.integer(2, 4)
    dims = [x[0]]
    left = n
    for _ in range(rank - 2):
        d = src.choice(_divisors(left))
        dims.append(d)
        left //= d
    dims.append(left)
    return (a,), {"shape": tuple(dims)}


def _draw_flatten(src: Source, a: int, shapes: list[Shape], lim: Limits) -> Drawn:
    return ((a,), {}) if len(shapes[a]) > 2 else None


def _draw_transpose(src: Source, a: int, shapes: list[Shape], lim: Limits) -> Drawn:
    rank = len(shapes[a])
    if rank < 3:
        return None
    perms = [p for p in _permutations(rank) if p != tuple(range(rank))]
    return (a,), {"perm": src.choice(perms)}


def _draw_act(src: Source, a: int, shapes: list[Shape], lim: Limits) -> Drawn:
    kind = src.choice(ACTIVATIONS)
    params: dict[str, Any] = {"kind": kind}
    if kind == "softmax":
        params["dim"] = src.choice((-1, 1))
    return (a,), params


def _draw_norm(src: Source, a: int, shapes: list[Shape], lim: Limits) -> Drawn:
    x = shapes[a]
    kinds = ["batch", "layer"]
    if len(x) in (3, 4):
        kinds += ["group"]
    if len(x) == 4 and x[2] * x[3] > 1:
        kinds += ["instance"]
    kind = src.choice(kinds)
    params: dict[str, Any] = {"kind": kind}
    if kind == "group":
        params["groups"] = src.choice([g for g in range(1, x[1] + 1) if x[1] % g == 0])
    return (a,), params


#: op name → drawer. Order matters for shrinking: hypothesis moves toward the first entries.
OPS: dict[str, Drawer] = {
    "act": _draw_act,
    "conv": _draw_conv,
    "linear": _draw_linear,
    "add": _draw_binary,
    "mul": _draw_binary,
    "concat": _draw_concat,
    "dwconv": _draw_dwconv,
    "maxpool": _draw_pool,
    "avgpool": _draw_pool,
    "gap": _draw_gap,
    "const": _draw_const,
    "norm": _draw_norm,
    "reshape": _draw_reshape,
    "flatten": _draw_flatten,
    "transpose": _draw_transpose,
}


def _broadcasts(s: Shape, x: Shape) -> bool:
    return len(s) == len(x) and all(b in (1, n) for b, n in zip(s, x, strict=True))


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _permutations(rank: int) -> list[tuple[int, ...]]:
    """Permutations that keep the batch axis first."""
    import itertools

    return [(0, *p) for p in itertools.permutations(range(1, rank))]


def _fits(shape: Shape, lim: Limits) -> bool:
    return all(d >= 1 for d in shape) and math.prod(shape) <= lim.max_elements


def _draw_input(src: Source, lim: Limits) -> Shape:
    rank = src.choice((4, 2, 3))
    if rank == 4:
        return (1, src.integer(1, 8), src.integer(1, lim.max_side), src.integer(1, lim.max_side))
    if rank == 3:
        return (1, src.integer(1, lim.max_side), src.integer(1, 2 * lim.max_side))
    return (1, src.integer(1, 4 * lim.max_side))


def generate(src: Source, limits: Limits | None = None) -> FuzzSpec:
    """Draw one model from `src`. Always valid: shapes are checked while drawing."""
    lim = limits or Limits()
    first = _draw_input(src, lim)
    inputs = [first]
    layers: list[Layer] = []
    if lim.max_inputs > 1 and src.flag(20):
        # A second input always feeds the first layer, together with the first input.
        second = first if src.flag(70) else (*first[:1], src.integer(1, 8), *first[2:])
        inputs.append(second)
        op = src.choice(("add", "mul", "concat")) if second == first else "concat"
        layers.append(Layer(op, (0, 1), {"dim": 1} if op == "concat" else {}))
    shapes = [*inputs, *(out_shape(ly, [inputs[i] for i in ly.inputs]) for ly in layers)]
    target = src.integer(1, lim.max_layers)
    tries = 0
    while len(layers) < target and tries < 4 * lim.max_layers:
        tries += 1
        a = len(shapes) - 1 if src.flag(65) else src.integer(0, len(shapes) - 1)
        op = src.choice(tuple(OPS))
        drawn = OPS[op](src, a, shapes, lim)
        if drawn is None:
            continue
        layer = Layer(op, *drawn)
        shape = out_shape(layer, [shapes[i] for i in layer.inputs])
        if not _fits(shape, lim):
            continue
        layers.append(layer)
        shapes.append(shape)
    if not layers:
        layers.append(Layer("act", (0,), {"kind": "relu"}))
        shapes.append(shapes[0])
    outputs = [len(shapes) - 1]
    made = list(range(len(inputs), len(shapes) - 1))
    if lim.max_outputs > 1 and made and src.flag(25):
        outputs.append(src.choice(made))
    return FuzzSpec(tuple(inputs), tuple(layers), tuple(outputs), seed=src.integer(0, 2**16))


def fuzz_specs(limits: Limits | None = None) -> Any:
    """A hypothesis strategy of `FuzzSpec`s (hypothesis is imported only when called)."""
    from hypothesis import strategies as st

    @st.composite
    def specs(draw: Callable[[Any], Any]) -> FuzzSpec:
        return generate(HypothesisSource(draw), limits)

    return specs()


# --- building -----------------------------------------------------------------------------


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
        inputs = tuple(torch.randn(s, generator=gen) for s in spec.inputs)
    return model, inputs


def random_inputs(spec: FuzzSpec, seed: int, n: int) -> list[tuple[np.ndarray, ...]]:
    """`n` standard-normal input tuples for `spec` (calibration or fresh test data)."""
    rng = np.random.default_rng(seed)
    return [tuple(rng.standard_normal(s).astype(np.float32) for s in spec.inputs) for _ in range(n)]
