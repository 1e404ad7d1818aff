"""Cross-layer equalization: which channel groups are exact, that the float function is kept,
that channel ranges even out, and that the int8 output gains when channels are unbalanced."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from bridge.artifact import OnnxArtifact
from bridge.quantize import QuantConfig, quantize
from bridge.quantize.calibrate import sample_feeds
from bridge.quantize.equalize import channel_groups, channel_ranges, equalize_artifact
from bridge.runtime.metrics import sqnr_db
from bridge.runtime.runners import OrtRunner

from .conftest import export, random_samples

#: Equalization only reorders float32 products: the outputs agree to float rounding.
FLOAT_DB = 100.0
#: The spread (max/min) of the residual stream's channel ranges, about 1000× before, must
#: shrink at least this much (t_c balances ranges against weights, so it roughly halves in dB).
MIN_SPREAD_CUT = 10.0
#: int8 gain on Unbalanced's held-out output (bias correction on in both): measured 3.3 dB.
MIN_GAIN_DB = 1.5


class Unbalanced(nn.Module):
    """A residual stream (stem, max-pool, a→ReLU→b, Add, ReLU) whose channels span 1000× in
    range, then c → ReLU6 → d, which no factor passes (the clip would move)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Conv2d(8, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 1)
        self.c = nn.Conv2d(8, 8, 1)
        self.d = nn.Conv2d(8, 4, 1)
        with torch.no_grad():
            spread = torch.logspace(-1.5, 1.5, 8)
            self.stem.weight.mul_(spread[:, None, None, None])
            self.stem.bias.mul_(spread)
            self.b.weight.mul_(spread[:, None, None, None])
            self.b.bias.mul_(spread)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(torch.relu(self.stem(x)), 2)
        h = torch.relu(h + self.b(torch.relu(self.a(h))))
        return self.d(F.relu6(self.c(h)))


def unbalanced() -> OnnxArtifact:
    torch.manual_seed(0)
    return export(Unbalanced(), (1, 3, 12, 12))


def feeds(art: OnnxArtifact, n: int, seed: int) -> list[dict[str, np.ndarray]]:
    return [sample_feeds(s, art.contract, i) for i, s in enumerate(random_samples(art, n, seed))]


def outputs(art: OnnxArtifact, data: list[dict[str, np.ndarray]]) -> np.ndarray:
    runner = OrtRunner(art.model, art.contract)
    return np.concatenate([runner.run(f)["y"] for f in data])


def test_groups_are_the_exact_ones() -> None:
    art = unbalanced()
    names = [n.name for n in art.model.graph.node]
    groups = {
        (tuple(names[i] for i in g.producers), tuple(names[i] for i in g.readers))
        for g in channel_groups(art.model)
    }
    assert groups == {
        (("/stem/Conv", "/b/Conv"), ("/a/Conv", "/c/Conv")),  # the residual stream
        (("/a/Conv",), ("/b/Conv",)),  # a → ReLU → b
    }, groups  # c → ReLU6 → d is not a group: relu6(x/t) ≠ relu6(x)/t


def test_float_function_is_kept_and_ranges_even_out() -> None:
    art = unbalanced()
    data = feeds(art, 8, seed=1)
    equalized, factors = equalize_artifact(art, data)
    assert sqnr_db(outputs(art, data), outputs(equalized, data)) >= FLOAT_DB
    stream = "/MaxPool_output_0"
    assert stream in factors and len(factors[stream]) == 8
    before = channel_ranges(art, data, [stream])[stream]
    after = channel_ranges(equalized, data, [stream])[stream]
    spread_before, spread_after = before.max() / before.min(), after.max() / after.min()
    assert spread_before / spread_after >= MIN_SPREAD_CUT, (spread_before, spread_after)


def test_int8_gains_and_the_factors_are_recorded() -> None:
    art = unbalanced()
    calib, held_out = random_samples(art, 16, seed=1), feeds(art, 16, seed=2)
    ref = outputs(art, held_out)
    plain = quantize(art, QuantConfig(mode="int8", equalize=False), calib)
    equal = quantize(art, QuantConfig(mode="int8", equalize=True), calib)
    assert "equalization" not in plain.facts["quantization"]
    assert "/MaxPool_output_0" in equal.facts["quantization"]["equalization"]
    gain = sqnr_db(ref, outputs(equal, held_out)) - sqnr_db(ref, outputs(plain, held_out))
    assert gain >= MIN_GAIN_DB, gain
