"""Cross-fit check: ranges from one half of the calibration data must hold on the other."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from bridge.artifact import OnnxArtifact
from bridge.errors import CalibrationError
from bridge.quantize import QuantConfig, calibrate
from bridge.quantize.calibrate import sample_feeds
from bridge.quantize.crossfit import (
    BATCH,
    MIN_FOLD,
    SHARE,
    CrossFit,
    Finding,
    batch_sqnr_quantile,
)
from bridge.quantize.qdq import quantize_model
from bridge.quantize.tails import TAIL_HORIZON
from bridge.runtime.runners import OrtRunner
from bridge.runtime.tolerances import floor

from .conftest import export


class Power(nn.Module):
    """(x + 0.3)^8 through three squarings: int8 cannot hold it for typical and rare x alike."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x + 0.3
        y = y * y
        y = y * y
        return y * y


class Mlp(nn.Module):
    """Linear, ReLU, linear, LayerNorm: every sample's output has about the same energy (no
    tail extension)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.norm = nn.Linear(16, 32), nn.Linear(32, 64), nn.LayerNorm(64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.b(torch.relu(self.a(x))))


class DeadUnit(Mlp):
    """The Mlp with hidden unit 0 dead (zero weights and bias) and read by the second layer
    with weight `BIG`, ~20× its others: each row's int8 scale is set by a weight that never
    meets a signal, so the others round coarsely. Weight rounding alone leaves it far under
    the int16x8 floor; its activations are the Mlp's."""

    BIG = 10.0

    def __init__(self) -> None:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            super().__init__()
        with torch.no_grad():
            self.a.weight[0] = 0.0
            self.a.bias[0] = 0.0
            self.b.weight[:, 0] = self.BIG


class LinearPower(nn.Module):
    """Power's chain after a linear layer (x·(I + 0.1) + 0.3): the fold models keep its weight
    and bias float, and its activations alone still fail."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        with torch.no_grad():
            self.lin.weight.copy_(torch.eye(4) + 0.1)
            self.lin.bias.fill_(0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x)
        y = y * y
        y = y * y
        return y * y


def samples(shape: tuple[int, ...], n: int, seed: int = 0) -> list[tuple[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(shape).astype(np.float32),) for _ in range(n)]


@pytest.fixture(scope="module")
def power() -> OnnxArtifact:
    return export(Power(), (1, 1))


@pytest.fixture(scope="module")
def mlp() -> OnnxArtifact:
    return export(Mlp(), (1, 16))


@pytest.fixture(scope="module")
def dead_unit() -> OnnxArtifact:
    return export(DeadUnit(), (1, 16))


def finding(artifact: OnnxArtifact, config: QuantConfig, data: list) -> Finding:
    """The cross-fit check's worst finding on `data`, driven by hand."""
    observers = calibrate(artifact, data, config, crossfit=False)
    cf = CrossFit(lambda: {t: config.make_observer(t) for t in observers}, ["y"])
    inputs = set(artifact.contract.input_names)
    runner = OrtRunner(
        artifact.model, artifact.contract, extra_outputs=[t for t in observers if t not in inputs]
    )
    for i, s in enumerate(data):
        feeds = sample_feeds(s, artifact.contract, i)
        cf.add(i, feeds, {**runner.run(feeds), **feeds})
    found = cf.check(artifact, config)
    assert found is not None
    return found


def test_batch_quantile_of_known_energies() -> None:
    # 20 dB in every sample: every batch is 20 dB
    same = np.tile([[1.0, 0.01]], (40, 1))
    assert batch_sqnr_quantile(same) == pytest.approx(20.0)
    # 10 of 40 samples are all noise: a batch with m of them is at 10·log10(4/m) dB; m ≥ 2 in
    # 26 % of batches and m ≥ 3 in 4 %, so the 10 % quantile is the m = 2 level, 3 dB
    mixed = np.tile([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 1.0]], (10, 1))
    assert batch_sqnr_quantile(mixed) == pytest.approx(10 * np.log10(BATCH / 2), abs=1e-6)
    # exact batches are capped at 200 dB, like metrics.sqnr_db
    assert batch_sqnr_quantile(np.tile([[1.0, 0.0]], (40, 1))) == 200.0


@pytest.mark.parametrize("model, shape", [(Power, (1, 1)), (LinearPower, (1, 4))])
def test_heavy_tailed_power_is_refused(model: type[nn.Module], shape: tuple[int, int]) -> None:
    with pytest.raises(CalibrationError, match="does not hold on unseen data") as err:
        calibrate(export(model(), shape), samples(shape, 125), QuantConfig())
    msg = str(err.value)
    assert "'y'" in msg and "125 calibration samples" in msg and "more calibration" in msg
    assert f"worst {SHARE:.0%} of batches of {BATCH}" in msg


def test_benign_model_passes_with_margin(mlp: OnnxArtifact) -> None:
    config = QuantConfig()
    assert calibrate(mlp, samples((1, 16), 64), config)  # the check runs and passes
    found = finding(mlp, config, samples((1, 16), 64))  # the same check, to read its finding
    assert found.sqnr_db > floor("int8", "torch_vs_qdq") + 10, found


def test_weight_rounding_alone_is_not_refused(dead_unit: OnnxArtifact) -> None:
    """The check judges ranges, not weights: the fold models keep float weights (the real
    model's weights are rounded and bias-corrected after calibration)."""
    config = QuantConfig(mode="int16x8")
    min_db = floor("int16x8", "torch_vs_qdq")
    data = samples((1, 16), 64)
    observers = calibrate(dead_unit, data, config)  # the check runs and passes
    # what fold models with int8 weights measured: weight rounding alone is far under the floor
    # on fresh samples, even with the ranges of all samples
    qdq = quantize_model(dead_unit, observers, config)
    ref = OrtRunner(dead_unit.model, dead_unit.contract)
    got = OrtRunner(qdq.model, qdq.contract)
    energy = []
    for i, s in enumerate(samples((1, 16), 32, seed=1)):
        feeds = sample_feeds(s, dead_unit.contract, i)
        r, q = ref.run(feeds)["y"].astype(np.float64), got.run(feeds)["y"]
        energy.append((np.sum(r**2), np.sum((r - q) ** 2)))
    assert batch_sqnr_quantile(np.array(energy)) < min_db - 5
    # what the check measures: int16 activations with half the ranges, on the other half
    found = finding(dead_unit, config, data)
    assert found.sqnr_db > min_db + 5, found


def test_too_few_samples_skip_the_check(power: OnnxArtifact) -> None:
    calibrate(power, samples((1, 1), 2 * MIN_FOLD - 1), QuantConfig())


def test_tails_for_concentrated_outputs_only(power: OnnxArtifact, mlp: OnnxArtifact) -> None:
    """(x + 0.3)^8: a few samples carry the energy, ranges are extended; an MLP's are not."""
    concentrated = calibrate(power, samples((1, 1), 64), QuantConfig(), crossfit=False)
    assert {o.tail_horizon for o in concentrated.values()} == {TAIL_HORIZON}
    assert concentrated["y"].range()[1] > concentrated["y"].max_val
    spread = calibrate(mlp, samples((1, 16), 64), QuantConfig())
    assert {o.tail_horizon for o in spread.values()} == {0.0}


def test_the_check_can_be_turned_off(power: OnnxArtifact) -> None:
    calibrate(power, samples((1, 1), 125), QuantConfig(), crossfit=False)
