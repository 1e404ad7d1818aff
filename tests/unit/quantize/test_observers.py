"""Observers on known distributions."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.errors import CalibrationError, ConfigError
from bridge.qparams import QParams
from bridge.quantize.observers import (
    OBSERVERS,
    Histogram,
    HistogramObserver,
    MinMaxObserver,
    MovingAverageObserver,
    MSEObserver,
    Observer,
    PercentileObserver,
)

#: A range search must clip a lone outlier at 50 for N(0, 1) data to below this.
CLIPPED_HI = 10.0


def gaussian_with_outlier(n: int = 20_000, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(n).astype(np.float32)
    x[0] = 50.0
    return x


def mse(x: np.ndarray, observer: object) -> float:
    scale, zero = observer.qparams()  # type: ignore[attr-defined]
    return float(np.mean((QParams(scale, zero, "int8").fake_quantize(x) - x) ** 2))


def test_registry_names() -> None:
    assert OBSERVERS.names() == ["minmax", "moving_average", "histogram", "percentile", "mse"]
    with pytest.raises(ConfigError, match="choose one of: minmax"):
        OBSERVERS.get("nope")


def test_minmax_keeps_the_outlier() -> None:
    obs = MinMaxObserver()
    for chunk in np.split(gaussian_with_outlier(), 4):
        obs.update(chunk)
    assert obs.range()[1] == 50.0
    assert obs.count == 4


@pytest.mark.parametrize(
    "observer",
    [HistogramObserver(method="kl"), PercentileObserver()],
    ids=["histogram-kl", "percentile"],
)
def test_kl_and_percentile_clip_the_outlier_minmax_keeps(observer: Observer) -> None:
    x = gaussian_with_outlier()
    minmax = MinMaxObserver()
    for chunk in np.split(x, 4):
        observer.update(chunk)
        minmax.update(chunk)
    lo, hi = observer.range()
    assert minmax.range()[1] == 50.0
    assert 3.0 < hi < CLIPPED_HI, (lo, hi)
    assert -CLIPPED_HI < lo < -3.0, (lo, hi)


@pytest.mark.parametrize(
    "observer", [HistogramObserver(), MSEObserver()], ids=["histogram-l2", "mse"]
)
def test_l2_searches_keep_a_lone_outlier(observer: Observer) -> None:
    """Clipping one value at 50σ costs more squared error than the finer grid saves."""
    x = gaussian_with_outlier()
    observer.update(x)
    clipper = PercentileObserver()
    clipper.update(x)
    assert observer.range()[1] > 40.0
    assert mse(x, observer) < mse(x, clipper) / 10


def test_mse_observer_clips_heavy_tails() -> None:
    """Student-t (3 degrees of freedom): the searched range beats min/max in squared error."""
    x = np.random.default_rng(0).standard_t(3, 100_000).astype(np.float32)
    obs, l2, minmax = MSEObserver(), HistogramObserver(), MinMaxObserver()
    for chunk in np.split(x, 4):
        for o in (obs, l2, minmax):
            o.update(chunk)
    assert mse(x, obs) < 0.9 * mse(x, minmax)
    assert mse(x, l2) <= mse(x, minmax)
    lo, hi = obs.range()
    assert lo > minmax.range()[0] or hi < minmax.range()[1]


def test_mse_observer_is_no_worse_than_minmax_on_uniform_data() -> None:
    x = np.random.default_rng(1).uniform(-1, 1, 10_000).astype(np.float32)
    obs, minmax = MSEObserver(), MinMaxObserver()
    obs.update(x)
    minmax.update(x)
    assert mse(x, obs) <= mse(x, minmax) * 1.01  # uniform data: no clipping pays off


def test_percentile_reads_the_quantiles() -> None:
    x = np.random.default_rng(2).uniform(0, 100, 100_000).astype(np.float32)
    obs = PercentileObserver(percentile=99.0)
    obs.update(x)
    lo, hi = obs.range()
    assert lo == pytest.approx(1.0, abs=0.2) and hi == pytest.approx(99.0, abs=0.2)


def test_moving_average_differs_from_minmax() -> None:
    rng = np.random.default_rng(3)
    batches = [
        rng.standard_normal(100).astype(np.float32) * (5 if i == 3 else 1) for i in range(10)
    ]
    ma, mm = MovingAverageObserver(), MinMaxObserver()
    for b in batches:
        ma.update(b)
        mm.update(b)
    lo, hi = ma.range()
    first_lo, first_hi = batches[0].min(), batches[0].max()
    assert first_hi <= hi < mm.range()[1]  # the one wide batch moved it only by c = 0.01
    assert mm.range()[0] < lo <= first_lo + 0.1
    expected = first_hi
    for b in batches[1:]:
        expected += 0.01 * (b.max() - expected)
    assert hi == pytest.approx(expected, rel=1e-6)


def test_histogram_memory_is_bounded_and_regrowth_keeps_counts() -> None:
    h = Histogram(64)
    rng = np.random.default_rng(4)
    total = 0
    for k in range(1, 30):
        x = rng.standard_normal(500) * k  # the range keeps growing
        h.add(x, float(x.min()), float(x.max()))
        total += x.size
        assert h.counts.size == 64
        assert h.counts.sum() == pytest.approx(total, rel=1e-12)
    assert h.lo <= -29 * 2 and h.hi >= 29 * 2
    assert h.counts.min() >= 0


def test_histogram_rebinning_keeps_mass_and_position() -> None:
    h = Histogram(128)
    first = np.random.default_rng(5).uniform(0.0, 1.0, 1000)
    h.add(first, float(first.min()), float(first.max()))
    h.add(np.array([-3.0, 5.0]), -3.0, 5.0)
    assert h.counts.sum() == 1002
    assert (h.lo, h.hi) == pytest.approx((-3.0, 5.0))
    inside = (h.centers > 0) & (h.centers < 1)
    assert h.counts[inside].sum() >= 1000 - 2  # at most a bin's worth smeared at each edge
    mean = float(np.sum(h.counts * h.centers) / h.counts.sum())
    true_mean = (first.sum() + 2.0) / 1002
    assert mean == pytest.approx(true_mean, abs=h.width)


def test_constant_tensor_gives_its_value_and_zero() -> None:
    obs = HistogramObserver()
    obs.update(np.full(100, 3.0, np.float32))
    assert obs.range() == (3.0, 3.0)
    scale, zero = obs.qparams()
    assert QParams(scale, zero, "int8").fake_quantize(np.float32(3.0)) == pytest.approx(
        3.0, abs=float(scale)
    )


def test_non_finite_values_are_skipped_and_counted() -> None:
    obs = MinMaxObserver()
    obs.update(np.array([1.0, np.nan, -2.0, np.inf], np.float32))
    assert obs.range() == (-2.0, 1.0)
    assert obs.nonfinite == 2


def test_empty_observer_raises() -> None:
    with pytest.raises(CalibrationError, match="no finite values"):
        HistogramObserver().range()


def test_bad_options_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="method"):
        HistogramObserver(method="entropy")
    with pytest.raises(ConfigError, match="percentile"):
        PercentileObserver(percentile=20)
    with pytest.raises(ConfigError, match="bins"):
        HistogramObserver(bins=4)


def test_int16_target_changes_the_search() -> None:
    """With 65536 levels clipping buys little, so the int16 range is wider than the int8 one."""
    x = gaussian_with_outlier()
    obs = MSEObserver()
    obs.update(x)
    hi8 = obs.range("int8", False)[1]
    hi16 = obs.range("int16", True)[1]
    assert hi16 > hi8


def test_options_belong_to_their_observer() -> None:
    with pytest.raises(TypeError):
        PercentileObserver(method="kl")  # type: ignore[call-arg]
    assert MSEObserver(bins=64).summary()["bins"] == 64
