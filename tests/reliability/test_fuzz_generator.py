"""The random model generator: valid models, tracked shapes, JSON round trip, variety, and the
special families (data-dependent branches, recurrent state outputs, constant outputs)."""

from __future__ import annotations

import json
from collections import Counter

import torch

from models.fuzz import (
    FAMILIES,
    OPS,
    FuzzSpec,
    Limits,
    RandomSource,
    build,
    family_of,
    generate,
    random_inputs,
)
from models.fuzz.families import CONDITIONS, CONSTANT_KINDS, RNN_READS
from models.fuzz.family_layers import Branch, ConstantOutput, Recurrent
from tools.fuzz import FRESH_SAMPLES, FRESH_SEED

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
    assert set(ops) == set(OPS) | {"branch", "rnn", "constant"}, set(ops) ^ set(OPS)
    # A DAG: some tensor feeds more than one layer, or a layer reads a non-latest tensor.
    fan_out = sum(
        any(Counter(i for ly in s.layers for i in ly.inputs)[t] > 1 for t in range(len(s.shapes())))
        for s in specs
    )
    assert fan_out >= len(specs) // 4, fan_out
    assert sum(len(s.inputs) == 2 for s in specs) >= 10
    assert sum(len(s.outputs) == 2 for s in specs) >= 10


#: Seeds for the family tests: enough for every family, condition and read to appear.
FAMILY_SEEDS = range(600)


def _family(name: str, count: int | None = None) -> list[FuzzSpec]:
    specs = [s for s in map(generate, map(RandomSource, FAMILY_SEEDS)) if family_of(s) == name]
    return specs[:count]


def test_family_shares_follow_the_limits() -> None:
    lim = Limits()
    counts = Counter(family_of(generate(RandomSource(seed), lim)) for seed in FAMILY_SEEDS)
    assert set(counts) == set(FAMILIES)
    for family, share in lim.family_shares().items():
        # 12 % of 600 is 72 ± 8 (one standard deviation); allow three.
        assert abs(counts[family] - share * len(FAMILY_SEEDS) / 100) < 25, counts
    only = Limits(branch_percent=100, recurrent_percent=0, constant_percent=0)
    none = Limits(branch_percent=0, recurrent_percent=0, constant_percent=0)
    assert {family_of(generate(RandomSource(seed), only)) for seed in SEEDS} == {"branch"}
    assert {family_of(generate(RandomSource(seed), none)) for seed in SEEDS} == {"plain"}


def test_families_are_deterministic_from_the_seed() -> None:
    for family in ("branch", "recurrent", "constant"):
        for spec in _family(family, 5):
            again = generate(RandomSource(_seed_of(spec)))
            assert again.key() == spec.key()
            (m1, x1), (m2, x2) = build(spec), build(again)
            t1 = [m.threshold for m in m1.layers if isinstance(m, Branch)]
            t2 = [m.threshold for m in m2.layers if isinstance(m, Branch)]
            assert t1 == t2
            with torch.inference_mode():
                y1, y2 = _outputs(m1(*x1)), _outputs(m2(*x2))
            assert all(torch.equal(a, b) for a, b in zip(y1, y2, strict=True))


def _seed_of(spec: FuzzSpec) -> int:
    return next(seed for seed in FAMILY_SEEDS if generate(RandomSource(seed)).key() == spec.key())


def _outputs(y: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return (y,) if isinstance(y, torch.Tensor) else y


def test_branches_take_both_paths_on_fresh_inputs() -> None:
    specs = _family("branch")
    assert {ly.params["cond"] for s in specs for ly in s.layers if ly.op == "branch"} == set(
        CONDITIONS
    )
    for spec in specs[:40]:
        model, _ = build(spec)
        samples = random_inputs(spec, spec.seed + FRESH_SEED, FRESH_SAMPLES)
        for layer, module in zip(spec.layers, model.layers, strict=True):
            if not isinstance(module, Branch):
                continue
            cond = layer.inputs[1]
            assert cond < len(spec.inputs), "the condition reads a model input"
            t = len(spec.inputs) + spec.layers.index(layer)
            assert _feeds(spec, t), f"an output depends on the branch: {spec.describe()}"
            taken = [module.taken(torch.from_numpy(x[cond])) for x in samples]
            # Thresholds sit at the 30th-70th percentile: each path on ≥ 10 % of fresh inputs.
            assert 0.1 <= sum(taken) / len(taken) <= 0.9, (spec.describe(), sum(taken))
            x = torch.linspace(-2, 2, 9)
            assert not torch.allclose(module.then(x), module.other(x)), layer.params


def test_recurrent_layers_are_read_from_their_state() -> None:
    specs = _family("recurrent")
    params = [ly.params for s in specs for ly in s.layers if ly.op == "rnn"]
    assert {p["read"] for p in params} == set(RNN_READS)
    assert {(p["cell"], p["layers"], p["batch_first"]) for p in params} >= {
        (cell, n, bf) for cell in ("lstm", "gru") for n in (1, 2, 3) for bf in (True, False)
    }
    assert all(p["read"] != "c_n" for p in params if p["cell"] == "gru")
    for spec in specs[:30]:
        model, inputs = build(spec)
        j = next(j for j, ly in enumerate(spec.layers) if ly.op == "rnn")
        t = len(spec.inputs) + j
        assert _feeds(spec, t), f"an output depends on the rnn layer: {spec.describe()}"
        _check_read(model.layers[j], spec.layers[j].params, _rnn_input(spec, model, inputs, j))


def _feeds(spec: FuzzSpec, t: int) -> bool:
    n_in, todo, seen = len(spec.inputs), list(spec.outputs), set()
    while todo:
        u = todo.pop()
        seen.add(u)
        todo += [i for i in (spec.layers[u - n_in].inputs if u >= n_in else ()) if i not in seen]
    return t in seen


def _rnn_input(spec: FuzzSpec, model: torch.nn.Module, inputs: tuple, j: int) -> torch.Tensor:
    values = list(inputs)
    with torch.inference_mode():
        for layer, module in zip(spec.layers[:j], model.layers[:j], strict=True):
            values.append(module(*(values[i] for i in layer.inputs)))
    return values[spec.layers[j].inputs[0]]


def _check_read(module: Recurrent, p: dict, x: torch.Tensor) -> None:
    """The layer's output is the read the spec names, computed by the torch RNN itself."""
    assert x.dim() == 3, "a [batch, time, features] input"
    with torch.inference_mode():
        got = module(x)
        y, state = module.rnn(x if p["batch_first"] else x.transpose(0, 1))
        h, c = state if isinstance(state, tuple) else (state, None)
        want = {
            "y": y if p["batch_first"] else y.transpose(0, 1),
            "h_n": h,
            "c_n": c,
            "h_last": h[-1],
            "linear_h": module.head(h[-1]) if module.head is not None else None,
        }[p["read"]]
    assert want is not None and torch.equal(got, want), p
    assert module.rnn.num_layers == p["layers"] and module.rnn.batch_first == p["batch_first"]


def test_constant_outputs_ignore_the_input() -> None:
    specs = _family("constant")
    kinds = set()
    for spec in specs[:30]:
        model, inputs = build(spec)
        j = next(j for j, ly in enumerate(spec.layers) if ly.op == "constant")
        module = model.layers[j]
        assert isinstance(module, ConstantOutput)
        kinds.add(module.kind)
        k = spec.outputs.index(len(spec.inputs) + j)
        assert k > 0, "beside an input-dependent output"
        other = tuple(torch.randn_like(x) for x in inputs)
        with torch.inference_mode():
            y1, y2 = _outputs(model(*inputs)), _outputs(model(*other))
        assert torch.equal(y1[k], y2[k])
        assert not torch.equal(y1[0], y2[0]) or y1[0].numel() == 0, spec.describe()
        owned = dict(module.named_buffers()) if module.kind == "buffer" else {}
        assert ("anchors" in owned) == (module.kind == "buffer")
    assert kinds == set(CONSTANT_KINDS)
