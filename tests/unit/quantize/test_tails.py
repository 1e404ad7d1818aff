"""Tail-aware ranges: the extrapolation maths and what it does to observer ranges."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bridge.errors import ConfigError
from bridge.quantize.observers import HistogramObserver, MinMaxObserver
from bridge.quantize.tails import (
    CONCENTRATION,
    MIN_SAMPLES,
    PEAK_SHARE,
    TAIL_HORIZON,
    Extremes,
    OutputEnergy,
    tail_level,
    widen,
)

#: Calibration samples, as the fuzz profile gives (128, 3 held out by bridge.convert).
N = 125


def minmax(values: np.ndarray, horizon: float | None) -> MinMaxObserver:
    """A MinMax observer fed one value per update."""
    obs = MinMaxObserver(tail_horizon=horizon)
    for v in values:
        obs.update(np.array([v], np.float32))
    return obs


def test_extremes_keep_only_the_largest() -> None:
    ext = Extremes(keep=16)
    for v in np.arange(1000.0):
        ext.add(-v, v, 2 * v * v)
    assert ext.count == 1000
    assert sorted(ext._hi) == list(np.arange(984.0, 1000.0))
    assert sorted(ext._lo) == list(np.arange(984.0, 1000.0))


def test_too_few_updates_give_no_levels() -> None:
    ext = Extremes()
    for v in range(MIN_SAMPLES - 1):
        ext.add(-1.0, float(v), 1.0 + v * v)
    assert ext.levels(32.0) is None
    ext.add(-1.0, 100.0, 1.0 + 100.0**2)
    assert ext.levels(32.0) is not None


def test_no_levels_when_the_peak_carries_little_energy() -> None:
    """Many values per update: clipping the largest one costs little, so nothing is extended."""
    many, few = Extremes(), Extremes()
    for v in range(50):
        many.add(-1.0, 3.0 + v, (3.0 + v) ** 2 / PEAK_SHARE * 2)
        few.add(-1.0, 3.0 + v, (3.0 + v) ** 2 / PEAK_SHARE / 2)
    assert many.levels(32.0) is None
    assert few.levels(32.0) is not None


def test_a_constant_extreme_stays() -> None:
    """ReLU6 outputs that saturate in every sample: σ = 0, the range is not moved."""
    assert tail_level([6.0] * 20, 125, 32.0) == 6.0


def test_level_of_exponential_maxima_is_the_quantile() -> None:
    """For exponential extremes the level is about the 1 − 1/(h·N) quantile, ln(h·N)."""
    horizon = 32.0
    levels = []
    for seed in range(20):
        top = np.sort(np.random.default_rng(seed).exponential(size=400))[::-1].tolist()
        levels.append(tail_level(top, 400, horizon))
    true = math.log(horizon * 400)
    # σ two standard errors up (k = 20 excesses: ×1.45) puts the level about 1.3× the quantile
    assert true < np.mean(levels) < 1.4 * true, (np.mean(levels), true)


@pytest.mark.parametrize("power", [1, 4])
def test_fresh_data_exceeds_an_extended_range_far_less_often(power: int) -> None:
    """Without the tail, a fresh sample exceeds the max of N with probability 1/(N + 1)."""
    rates = {32.0: [], None: []}
    for seed in range(8):
        rng = np.random.default_rng(seed)
        cal = rng.standard_normal(N) ** power
        fresh = rng.standard_normal(200_000) ** power
        for horizon in rates:
            hi = minmax(cal, horizon).range()[1]
            rates[horizon].append(np.mean(fresh > hi))
    with_tail, without = np.mean(rates[32.0]), np.mean(rates[None])
    assert 0.5 / (N + 1) < without < 2.0 / (N + 1), without
    assert with_tail < without / 4, (with_tail, without)


def test_widen_moves_only_sides_that_reached_their_extreme() -> None:
    levels = (-9.0, 9.0)
    assert widen(-5.0, 5.0, (-5.0, 5.0), levels) == (-9.0, 9.0)
    assert widen(-5.0, 3.0, (-5.0, 5.0), levels) == (-9.0, 3.0)  # the top was clipped
    assert widen(-5.0, 5.0, (-5.0, 5.0), None) == (-5.0, 5.0)


def test_large_tensors_keep_their_range() -> None:
    """ResNet18's 1000 logits: a clipped peak would be ~1 % of a sample's energy."""
    rng = np.random.default_rng(0)
    obs = MinMaxObserver(tail_horizon=32.0)
    for _ in range(N):
        obs.update(rng.standard_normal(1000).astype(np.float32))
    assert obs.range() == (obs.min_val, obs.max_val)


def test_a_clipping_observer_keeps_its_clip() -> None:
    """Large Gaussian tensors: the L2 search clips the extremes, the tail changes nothing."""
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal(4096).astype(np.float32) for _ in range(32)]
    ranges = []
    for horizon in (32.0, None):
        obs = HistogramObserver(tail_horizon=horizon)
        for b in batches:
            obs.update(b)
        ranges.append(obs.range())
    assert ranges[0] == ranges[1]
    assert ranges[0][1] < obs.max_val


def test_tail_horizon_is_validated_and_a_configured_one_is_kept() -> None:
    with pytest.raises(ConfigError, match="tail_horizon"):
        MinMaxObserver(tail_horizon=0.5)
    fixed, auto = MinMaxObserver(tail_horizon=0), MinMaxObserver()
    assert (fixed.tail_horizon, auto.tail_horizon) == (0.0, 0.0)  # auto: off until chosen
    fixed.choose_tail(32.0)
    auto.choose_tail(32.0)
    assert (fixed.tail_horizon, auto.tail_horizon) == (0.0, 32.0)


@pytest.mark.parametrize(
    ("values", "power", "extended"),
    [(1, 4, True), (1, 1, True), (128, 1, False), (1000, 1, False)],
    ids=["x4-scalar", "scalar", "128-values", "1000-logits"],
)
def test_output_concentration_decides_the_tail(values: int, power: int, extended: bool) -> None:
    rng = np.random.default_rng(0)
    energy = OutputEnergy()
    for _ in range(N):
        energy.update({"y": rng.standard_normal(values) ** power})
    assert (energy.concentration() >= CONCENTRATION) == extended, energy.concentration()
    assert energy.horizon() == (TAIL_HORIZON if extended else 0.0)


def test_no_tail_from_too_few_or_silent_samples() -> None:
    energy = OutputEnergy()
    for v in (0.0, 0.0, 10.0):
        energy.update({"y": np.array([v])})
    assert energy.concentration() == 3.0 and energy.horizon() == 0.0  # too few samples
    silent = OutputEnergy()
    for _ in range(N):
        silent.update({"y": np.zeros(4)})
    assert silent.concentration() == 0.0
