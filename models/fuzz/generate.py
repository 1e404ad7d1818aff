"""Drawing a random `FuzzSpec`: one drawer per op, shapes checked as layers are added.

Each step picks a tensor (usually the latest, else any earlier one, so graphs branch), an op
from `OPS` and its parameters; a second operand for add/mul/concat is any earlier tensor of a
fitting shape (so branches merge). Layers whose output would be empty or too large are
skipped. A second input always feeds the first layer; a second output is sometimes an
intermediate tensor.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

from models.fuzz.families import draw_branch, draw_constant, draw_family, draw_rnn
from models.fuzz.sources import HypothesisSource, Source
from models.fuzz.spec import ACTIVATIONS, FuzzSpec, Layer, Limits, Shape, out_shape

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
    spatial = math.prod(x[2:])
    # Group and instance norms need more than one value per normalised group.
    groups = [g for g in _divisors(x[1]) if x[1] // g * spatial > 1] if len(x) > 2 else []
    kinds = ["batch", "layer"] + (["group"] if groups else [])
    if len(x) == 4 and spatial > 1:
        kinds += ["instance"]
    kind = src.choice(kinds)
    params: dict[str, Any] = {"kind": kind}
    if kind == "group":
        params["groups"] = src.choice(groups)
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
    return [(0, *p) for p in itertools.permutations(range(1, rank))]


def _fits(shape: Shape, lim: Limits) -> bool:
    return all(d >= 1 for d in shape) and math.prod(shape) <= lim.max_elements


def _draw_input(src: Source, lim: Limits, rank: int | None = None) -> Shape:
    rank = rank or src.choice((4, 2, 3))
    if rank == 4:
        return (1, src.integer(1, 8), src.integer(1, lim.max_side), src.integer(1, lim.max_side))
    if rank == 3:
        return (1, src.integer(1, lim.max_side), src.integer(1, 2 * lim.max_side))
    return (1, src.integer(1, 4 * lim.max_side))


def _draw_inputs(src: Source, lim: Limits, rank: int | None) -> tuple[list[Shape], list[Layer]]:
    """One or two inputs; a second input always feeds the first layer, with the first."""
    first = _draw_input(src, lim, rank)
    inputs = [first]
    layers: list[Layer] = []
    if lim.max_inputs > 1 and src.flag(20):
        second = first if src.flag(70) else (*first[:1], src.integer(1, 8), *first[2:])
        inputs.append(second)
        op = src.choice(("add", "mul", "concat")) if second == first else "concat"
        layers.append(Layer(op, (0, 1), {"dim": 1} if op == "concat" else {}))
    return inputs, layers


def _draw_layer(src: Source, shapes: list[Shape], lim: Limits) -> Layer | None:
    """A random layer from `OPS` on a random earlier tensor, or None if it does not fit."""
    a = len(shapes) - 1 if src.flag(65) else src.integer(0, len(shapes) - 1)
    op = src.choice(tuple(OPS))
    drawn = OPS[op](src, a, shapes, lim)
    return None if drawn is None else Layer(op, *drawn)


def generate(src: Source, limits: Limits | None = None) -> FuzzSpec:
    """Draw one model from `src`. Always valid: shapes are checked while drawing.

    The family (`draw_family`) decides whether the model also holds a data-dependent branch,
    a recurrent layer read from its state, or a constant output."""
    lim = limits or Limits()
    family = draw_family(src, lim)
    inputs, layers = _draw_inputs(src, lim, 3 if family == "recurrent" else None)
    shapes = [*inputs, *(out_shape(ly, [inputs[i] for i in ly.inputs]) for ly in layers)]
    if family == "recurrent":
        layers.append(Layer("rnn", (len(shapes) - 1,), draw_rnn(src, shapes[-1], lim)))
        shapes.append(out_shape(layers[-1], [shapes[-1]]))
    target = _draw_target(src, lim, family, len(layers))
    branch_at = src.integer(len(layers), max(len(layers), target - 1))
    tries = 0
    while len(layers) < target and tries < 4 * lim.max_layers:
        tries += 1
        if family == "branch" and len(layers) == branch_at:
            layer = draw_branch(src, len(inputs), len(shapes) - 1)
        else:
            layer = _draw_layer(src, shapes, lim)
        if layer is None:
            continue
        shape = out_shape(layer, [shapes[i] for i in layer.inputs])
        if not _fits(shape, lim):
            continue
        layers.append(layer)
        shapes.append(shape)
    if family == "branch" and not any(ly.op == "branch" for ly in layers):
        layers.append(draw_branch(src, len(inputs), len(shapes) - 1))
        shapes.append(shapes[-1])
    if not layers:
        layers.append(Layer("act", (0,), {"kind": "relu"}))
        shapes.append(shapes[0])
    outputs = _draw_outputs(src, lim, len(inputs), layers, family)
    if family == "constant":
        layers.append(Layer("constant", (0,), draw_constant(src, lim)))
        outputs.append(len(shapes))
    return FuzzSpec(tuple(inputs), tuple(layers), tuple(outputs), seed=src.integer(0, 2**16))


def _draw_target(src: Source, lim: Limits, family: str, placed: int) -> int:
    """How many layers to draw: 0-2 after a recurrent layer (so its state is often the output
    itself), else up to the limit with room for a constant or fallback branch layer."""
    if family == "recurrent":
        return placed + src.integer(0, 2)
    extra = 1 if family in ("branch", "constant") else 0
    return src.integer(1, max(1, lim.max_layers - extra))


def _draw_outputs(
    src: Source, lim: Limits, n_in: int, layers: list[Layer], family: str
) -> list[int]:
    """The last tensor; a branch or rnn layer that feeds no output is an output itself; else
    sometimes an intermediate tensor (never beside a constant output)."""
    n = n_in + len(layers)
    feeding = _ancestors(layers, n_in, [n - 1])
    special = [n_in + j for j, ly in enumerate(layers) if ly.op in ("branch", "rnn")]
    outputs = [n - 1, *(t for t in special if t not in feeding)]
    made = list(range(n_in, n - 1))
    if family == "plain" and len(outputs) < lim.max_outputs and made and src.flag(25):
        outputs.append(src.choice(made))
    return outputs


def _ancestors(layers: list[Layer], n_in: int, outputs: list[int]) -> set[int]:
    """Every tensor some output depends on, the outputs included."""
    seen, todo = set(), list(outputs)
    while todo:
        t = todo.pop()
        if t not in seen:
            seen.add(t)
            todo.extend(layers[t - n_in].inputs if t >= n_in else ())
    return seen


def fuzz_specs(limits: Limits | None = None) -> Any:
    """A hypothesis strategy of `FuzzSpec`s (hypothesis is imported only when called)."""
    from hypothesis import strategies as st

    @st.composite
    def specs(draw: Callable[[Any], Any]) -> FuzzSpec:
        return generate(HypothesisSource(draw), limits)

    return specs()
