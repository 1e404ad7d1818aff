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

Families (`FAMILIES`, shares in `Limits`): besides plain graphs, a model may hold a
data-dependent Python branch (`branch`), an LSTM/GRU read from its final state (`rnn`), or a
constant output beside the input-dependent one (`constant`); see `families.py`.
"""

from __future__ import annotations

from models.fuzz.build import FuzzNet, build, random_inputs
from models.fuzz.families import FAMILIES, draw_family, family_of
from models.fuzz.generate import OPS, fuzz_specs, generate
from models.fuzz.sources import HypothesisSource, RandomSource, Source
from models.fuzz.spec import ACTIVATIONS, FuzzSpec, Layer, Limits, out_shape

__all__ = [
    "ACTIVATIONS",
    "FAMILIES",
    "OPS",
    "FuzzNet",
    "FuzzSpec",
    "HypothesisSource",
    "Layer",
    "Limits",
    "RandomSource",
    "Source",
    "build",
    "draw_family",
    "family_of",
    "fuzz_specs",
    "generate",
    "out_shape",
    "random_inputs",
]
