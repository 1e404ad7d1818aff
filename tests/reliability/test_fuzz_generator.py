"""The random model generator: valid models, tracked shapes, JSON round trip, variety."""

from __future__ import annotations

import json
from collections import Counter

import torch

from models.fuzz import OPS, FuzzSpec, Limits, RandomSource, build, generate

SEEDS = range(200)


def _forward_shapes(spec: FuzzSpec) -> list[tuple[int, ...]]:
    model, inputs = build(spec)
    values = list(inputs)
    with torch.inference_mode():
        for layer, module in zip(spec.layers, model.layers, strict=True):
            values.append(module(*(values[i] for i in layer.inputs)))
    return [tuple(v.shape) for v in values]


def test_tracked_shapes_match_torch() -> None:
    for seed in SEEDS:
        spec = generate(RandomSource(seed))
        assert _forward_shapes(spec) == spec.shapes(), spec.describe()


def test_specs_respect_limits() -> None:
    lim = Limits()
    for seed in SEEDS:
        spec = generate(RandomSource(seed), lim)
        assert 1 <= len(spec.layers) <= lim.max_layers
        assert all(max(s) > 0 and torch.Size(s).numel() <= lim.max_elements for s in spec.shapes())
        n_in = len(spec.inputs)
        assert all(n_in <= o < n_in + len(spec.layers) for o in spec.outputs)


def test_json_round_trip_rebuilds_the_same_model() -> None:
    spec = generate(RandomSource(11))
    again = FuzzSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec and again.key() == spec.key()
    (m1, x1), (m2, x2) = build(spec), build(again)
    assert all(torch.equal(a, b) for a, b in zip(x1, x2, strict=True))
    with torch.inference_mode():
        y1, y2 = m1(*x1), m2(*x2)
    y1, y2 = (
        (y1,) if isinstance(y1, torch.Tensor) else y1,
        (y2,) if isinstance(y2, torch.Tensor) else y2,
    )
    assert all(torch.equal(a, b) for a, b in zip(y1, y2, strict=True))


def test_every_op_and_dags_are_generated() -> None:
    specs = [generate(RandomSource(seed)) for seed in SEEDS]
    ops = Counter(layer.op for s in specs for layer in s.layers)
    assert set(ops) == set(OPS), f"never generated: {set(OPS) - set(ops)}"
    # A DAG: some tensor feeds more than one layer, or a layer reads a non-latest tensor.
    fan_out = sum(
        any(Counter(i for ly in s.layers for i in ly.inputs)[t] > 1 for t in range(len(s.shapes())))
        for s in specs
    )
    assert fan_out >= len(specs) // 4, fan_out
    assert sum(len(s.inputs) == 2 for s in specs) >= 10
    assert sum(len(s.outputs) == 2 for s in specs) >= 10
