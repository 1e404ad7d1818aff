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
from bridge.quantize.crossfit import BATCH, MIN_FOLD, SHARE, CrossFit, batch_sqnr_quantile
from bridge.quantize.tails import TAIL_HORIZON
from bridge.verify.runners import OrtRunner
from bridge.verify.tolerances import floor

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


def samples(shape: tuple[int, ...], n: int, seed: int = 0) -> list[tuple[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(shape).astype(np.float32),) for _ in range(n)]


@pytest.fixture(scope="module")
def power() -> OnnxArtifact:
    return export(Power(), (1, 1))


@pytest.fixture(scope="module")
def mlp() -> OnnxArtifact:
    return export(Mlp(), (1, 16))


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


def test_heavy_tailed_power_is_refused(power: OnnxArtifact) -> None:
    with pytest.raises(CalibrationError, match="does not hold on unseen data") as err:
        calibrate(power, samples((1, 1), 125), QuantConfig())
    msg = str(err.value)
    assert "'y'" in msg and "125 calibration samples" in msg and "more calibration" in msg
    assert f"worst {SHARE:.0%} of batches of {BATCH}" in msg


def test_benign_model_passes_with_margin(mlp: OnnxArtifact) -> None:
    config = QuantConfig()
    assert calibrate(mlp, samples((1, 16), 64), config)  # the check runs and passes
    # the same check, driven by hand to read its finding
    observers = calibrate(mlp, samples((1, 16), 64), config, crossfit=False)
    cf = CrossFit(lambda: {t: config.make_observer(t) for t in observers}, ["y"])
    runner = OrtRunner(mlp.model, mlp.contract, extra_outputs=[t for t in observers if t != "x0"])
    for i, s in enumerate(samples((1, 16), 64)):
        feeds = sample_feeds(s, mlp.contract, i)
        cf.add(i, feeds, {**runner.run(feeds), **feeds})
    finding = cf.check(mlp, config)
    assert finding is not None
    assert finding.sqnr_db > floor("int8", "torch_vs_qdq") + 10, finding


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
