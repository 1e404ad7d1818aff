"""Observers: gather statistics of one tensor and turn them into a range [lo, hi].

Collecting statistics and deriving qparams are separate: every observer ends in the same
`bridge.qparams.affine_qparams`; subclasses change only how the range is found.

- `MinMaxObserver`: the running minimum and maximum.
- `MovingAverageObserver`: exponential moving average of each batch's min and max,
  m ← m + c·(batch − m) with c = 0.01 (as torch.ao).
- `HistogramObserver`: a memory-bounded histogram (default 2048 bins; when data falls outside,
  the bins are stretched over the new range and the old counts re-binned by overlap). The range
  is searched along a path of tail cuts: for each total clipped mass m (0 to 20 %), the cut
  whose left/right split gives the narrowest range. The path is scored by the L2 error of
  quantizing the bin centres ("l2", default) or by the KL divergence between the clipped
  distribution and its quantized version ("kl", as in TensorRT's entropy calibration).
- `PercentileObserver`: [P(100 − p), P(p)] of the histogram, p = 99.99 by default.
- `MSEObserver`: a grid over [α·min, β·max], α, β ∈ (0, 1], minimising the mean squared error
  of fake-quantizing the histogram's bin centres with the target grid.

A range always widens to include 0 in `affine_qparams`; every searched range is clipped to the
observed [min, max]. A side that keeps the observed extreme can then be extended to where unseen
data will reach, extrapolated from the per-update extremes (`bridge.quantize.tails`;
`tail_horizon`; by default calibration chooses it from how concentrated the outputs are).
Non-finite values are counted and skipped.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from bridge.errors import CalibrationError, ConfigError
from bridge.qparams import affine_qparams, qrange
from bridge.quantize.tails import Extremes, widen
from bridge.registry import Registry

OBSERVERS: Registry[type[Observer]] = Registry("observer")


class Observer:
    """Base: tracks min/max and the number of updates; subclasses add statistics.

    Args:
        dtype: the integer type the range will be quantized to (searches use its grid).
        symmetric: whether that grid is symmetric (zero point 0).
        tail_horizon: extend a range that keeps an observed extreme to the extreme of this many
            times the calibration data (`bridge.quantize.tails`); 0 keeps it as found; None
            (default) leaves the choice to `calibrate` (off until it chooses).
    """

    name: ClassVar[str] = "observer"

    def __init__(
        self,
        *,
        dtype: str = "int8",
        symmetric: bool = False,
        tail_horizon: float | None = None,
    ) -> None:
        qrange(dtype)  # validates the dtype
        self.dtype = dtype
        self.symmetric = symmetric
        #: True while calibration may still choose the tail horizon (`choose_tail`).
        self.tail_auto = tail_horizon is None
        self.tail_horizon = 0.0
        self.set_tail_horizon(tail_horizon or 0.0)
        self.extremes = Extremes()
        self.count = 0
        self.nonfinite = 0
        self.min_val = math.inf
        self.max_val = -math.inf
        self._cache: dict[tuple[str, bool], tuple[float, float]] = {}

    def update(self, array: np.ndarray) -> None:
        """Add one batch of values (any shape); non-finite values are skipped and counted."""
        x = np.asarray(array).ravel()
        if x.dtype not in (np.float32, np.float64):
            x = x.astype(np.float32)
        if x.size and not np.all(np.isfinite(x)):
            finite = np.isfinite(x)
            self.nonfinite += int(x.size - finite.sum())
            x = x[finite]
        if x.size == 0:
            return
        lo, hi = float(x.min()), float(x.max())
        self.count += 1
        self._cache.clear()
        self._observe(x, lo, hi)
        self.extremes.add(lo, hi, float(np.dot(x, x)))
        self.min_val = min(self.min_val, lo)
        self.max_val = max(self.max_val, hi)

    def _observe(self, x: np.ndarray, lo: float, hi: float) -> None:
        """Subclass hook, called before min_val/max_val include this batch."""

    def set_tail_horizon(self, horizon: float) -> None:
        """Extend kept extremes to the extreme of `horizon` × the data seen (0: no extension)."""
        if not (horizon == 0 or horizon >= 1):
            raise ConfigError(f"tail_horizon must be 0, None or at least 1, got {horizon}")
        self.tail_horizon = float(horizon)
        self._cache = {}

    def choose_tail(self, horizon: float) -> None:
        """Calibration's choice of the tail horizon; ignored if one was configured."""
        if self.tail_auto:
            self.set_tail_horizon(horizon)

    def range(self, dtype: str | None = None, symmetric: bool | None = None) -> tuple[float, float]:
        """The chosen real range [lo, hi] for the target grid (defaults: the constructor's),
        with the tail extension applied."""
        if self.count == 0:
            raise CalibrationError(
                f"{self.name} observer saw no finite values; check the calibration data"
            )
        key = (dtype or self.dtype, self.symmetric if symmetric is None else symmetric)
        if key not in self._cache:
            lo, hi = self._range(*key)
            if self.tail_horizon:
                levels = self.extremes.levels(self.tail_horizon)
                lo, hi = widen(lo, hi, (self.min_val, self.max_val), levels)
            self._cache[key] = (float(lo), float(hi))
        return self._cache[key]

    def _range(self, dtype: str, symmetric: bool) -> tuple[float, float]:
        return self.min_val, self.max_val

    def qparams(
        self, dtype: str | None = None, symmetric: bool | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scale, zero_point) for this observer's range via `affine_qparams`."""
        dtype = dtype or self.dtype
        symmetric = self.symmetric if symmetric is None else symmetric
        lo, hi = self.range(dtype, symmetric)
        return affine_qparams(lo, hi, dtype=dtype, symmetric=symmetric)

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable statistics for reports."""
        return {
            "observer": self.name,
            "updates": self.count,
            "min": self.min_val if self.count else None,
            "max": self.max_val if self.count else None,
            "nonfinite": self.nonfinite,
            "tail_horizon": self.tail_horizon,
        }


@OBSERVERS.register("minmax")
class MinMaxObserver(Observer):
    """Running min and max over all batches."""

    name = "minmax"


@OBSERVERS.register("moving_average")
class MovingAverageObserver(Observer):
    """Exponential moving average of per-batch min and max (the first batch initialises it)."""

    name = "moving_average"

    def __init__(self, *, averaging_constant: float = 0.01, **kw: Any) -> None:
        super().__init__(**kw)
        if not 0.0 < averaging_constant <= 1.0:
            raise ConfigError(f"averaging_constant must be in (0, 1], got {averaging_constant}")
        self.c = averaging_constant
        self.avg_min = 0.0
        self.avg_max = 0.0

    def _observe(self, x: np.ndarray, lo: float, hi: float) -> None:
        if self.count == 1:
            self.avg_min, self.avg_max = lo, hi
        else:
            self.avg_min += self.c * (lo - self.avg_min)
            self.avg_max += self.c * (hi - self.avg_max)

    def _range(self, dtype: str, symmetric: bool) -> tuple[float, float]:
        return self.avg_min, self.avg_max


class Histogram:
    """A fixed number of equal-width bins over [lo, lo + bins·width] that re-bins as data grows.

    When data falls outside, the bins are stretched to the new [min, max] and the old counts are
    spread over them in proportion to overlap (their cumulative distribution is interpolated
    linearly), so the total count is kept exactly and memory never grows.
    """

    def __init__(self, bins: int) -> None:
        if bins < 16:
            raise ConfigError(f"a histogram needs at least 16 bins, got {bins}")
        self.bins = bins
        self.counts = np.zeros(bins, np.float64)
        self.lo = 0.0
        self.width = 0.0

    @property
    def hi(self) -> float:
        return self.lo + self.bins * self.width

    @property
    def edges(self) -> np.ndarray:
        return self.lo + self.width * np.arange(self.bins + 1, dtype=np.float64)

    @property
    def centers(self) -> np.ndarray:
        return self.lo + self.width * (np.arange(self.bins, dtype=np.float64) + 0.5)

    def add(self, x: np.ndarray, lo: float, hi: float) -> None:
        """Count the finite values `x` whose min and max are `lo` and `hi`."""
        if self.width == 0.0:
            span = hi - lo
            if span == 0.0:  # a constant so far: a tiny window around it
                span = max(abs(lo), 1.0) * 1e-3
                lo -= span / 2
            self.lo, self.width = lo, span / self.bins
        elif lo < self.lo or hi > self.hi:
            self._rebin(min(lo, self.lo), max(hi, self.hi))
        # bin index = floor((x − lo)·bins / span), in x's precision (a value within rounding of an
        # edge may land in the neighbouring bin, which no range search can notice)
        step = x.dtype.type(self.bins / (self.hi - self.lo))
        idx = ((x - x.dtype.type(self.lo)) * step).astype(np.int64)
        np.clip(idx, 0, self.bins - 1, out=idx)
        self.counts += np.bincount(idx, minlength=self.bins)

    def _rebin(self, lo: float, hi: float) -> None:
        cdf = np.concatenate([[0.0], np.cumsum(self.counts)])
        new_edges = lo + (hi - lo) / self.bins * np.arange(self.bins + 1, dtype=np.float64)
        moved = np.diff(np.interp(new_edges, self.edges, cdf))
        moved[-1] += cdf[-1] - moved.sum()  # float rounding: keep the total exact
        self.counts, self.lo, self.width = moved, lo, (hi - lo) / self.bins


class HistogramBase(Observer):
    """An observer that keeps a `Histogram` of its values (`bins` bins)."""

    def __init__(self, *, bins: int = 2048, **kw: Any) -> None:
        super().__init__(**kw)
        self.hist = Histogram(bins)

    def _observe(self, x: np.ndarray, lo: float, hi: float) -> None:
        self.hist.add(x, lo, hi)

    def _clip(self, lo: float, hi: float) -> tuple[float, float]:
        return max(lo, self.min_val), min(hi, self.max_val)

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "bins": self.hist.bins}


@OBSERVERS.register("histogram")
class HistogramObserver(HistogramBase):
    """Histogram of values; range by searching tail cuts with an L2 or KL criterion.

    With "kl" a candidate must span at least one bin per quantization level, so for int16
    (65536 levels) the search keeps the full range.

    Args:
        bins: number of bins (memory bound).
        method: "l2" (squared quantization error of the bin centres) or "kl" (entropy).
        max_clip: largest total fraction of values the search may clip.
    """

    name = "histogram"
    METHODS = ("l2", "kl")

    def __init__(
        self, *, bins: int = 2048, method: str = "l2", max_clip: float = 0.2, **kw: Any
    ) -> None:
        super().__init__(bins=bins, **kw)
        if method not in self.METHODS:
            raise ConfigError(f"histogram method {method!r}; choose one of: {self.METHODS}")
        if not 0.0 < max_clip < 1.0:
            raise ConfigError(f"max_clip must be in (0, 1), got {max_clip}")
        self.method = method
        self.max_clip = max_clip

    def _range(self, dtype: str, symmetric: bool) -> tuple[float, float]:
        if self.max_val == self.min_val:
            return self.min_val, self.max_val
        cuts = tail_cut_path(self.hist.counts, self.max_clip)
        if self.method == "kl":
            levels = qrange(dtype)[1] - qrange(dtype)[0] + 1
            cuts = [(s, e) for s, e in cuts if e - s >= min(levels, self.hist.bins)] or cuts[:1]
            losses = [kl_loss(self.hist.counts, s, e, levels) for s, e in cuts]
        else:
            edges = self.hist.edges
            bounds = np.array([(edges[s], edges[e]) for s, e in cuts])
            losses = l2_loss(self.hist, bounds, dtype, symmetric)
        s, e = cuts[int(np.argmin(losses))]
        return self._clip(self.hist.edges[s], self.hist.edges[e])

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "method": self.method}


@OBSERVERS.register("percentile")
class PercentileObserver(HistogramBase):
    """Range [P(100 − p), P(p)] read from the histogram (linear within a bin)."""

    name = "percentile"

    def __init__(self, *, percentile: float = 99.99, bins: int = 2048, **kw: Any) -> None:
        super().__init__(bins=bins, **kw)
        if not 50.0 < percentile <= 100.0:
            raise ConfigError(f"percentile must be in (50, 100], got {percentile}")
        self.percentile = percentile

    def _range(self, dtype: str, symmetric: bool) -> tuple[float, float]:
        counts = self.hist.counts
        cdf = np.concatenate([[0.0], np.cumsum(counts)]) / counts.sum()
        edges = self.hist.edges
        lo = float(np.interp(1.0 - self.percentile / 100.0, cdf, edges))
        hi = float(np.interp(self.percentile / 100.0, cdf, edges))
        return self._clip(lo, hi)

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "percentile": self.percentile}


@OBSERVERS.register("mse")
class MSEObserver(HistogramBase):
    """Grid search of [α·min, β·max] minimising the squared quantization error.

    Args:
        grid: number of α (and β) values, evenly spaced in (0, 1].
        bins: histogram bins.
    """

    name = "mse"

    def __init__(self, *, grid: int = 40, bins: int = 2048, **kw: Any) -> None:
        super().__init__(bins=bins, **kw)
        if grid < 2:
            raise ConfigError(f"grid must be at least 2, got {grid}")
        self.grid = grid

    def _range(self, dtype: str, symmetric: bool) -> tuple[float, float]:
        lo, hi = min(self.min_val, 0.0), max(self.max_val, 0.0)
        fractions = np.linspace(1.0 / self.grid, 1.0, self.grid)
        his = fractions * hi
        if symmetric:  # only max(|lo|, |hi|) matters
            amax = max(-lo, hi) * fractions
            bounds = np.stack([-amax, amax], axis=1)
        else:
            bounds = np.array([(a * lo, h) for a in fractions for h in his])
        losses = l2_loss(self.hist, bounds, dtype, symmetric)
        best = bounds[int(np.argmin(losses))]
        return self._clip(float(best[0]), float(best[1]))


def tail_cut_path(counts: np.ndarray, max_clip: float, steps: int = 48) -> list[tuple[int, int]]:
    """Candidate bin ranges [s, e) that clip an increasing total mass, narrowest split first.

    For each total mass m in {0} ∪ geomspace(1e-7, max_clip), try splitting m between the left
    and right tail in 21 ratios and keep the split giving the fewest remaining bins.
    """
    total = counts.sum()
    cum = np.cumsum(counts)
    masses = np.concatenate([[0.0], np.geomspace(1e-7, max_clip, steps)]) * total
    ratios = np.linspace(0.0, 1.0, 21)
    left = masses[:, None] * ratios[None, :]
    right = masses[:, None] - left
    # bins entirely inside the left / right tail budget can be dropped
    start = np.searchsorted(cum, left, side="right")
    end = np.searchsorted(cum, total - right, side="left") + 1
    end = np.minimum(end, counts.size)
    start = np.minimum(start, end - 1)
    best = np.argmin(end - start, axis=1)
    rows = np.arange(masses.size)
    pairs = zip(start[rows, best].tolist(), end[rows, best].tolist(), strict=True)
    return list(dict.fromkeys(pairs))


def l2_loss(hist: Histogram, bounds: np.ndarray, dtype: str, symmetric: bool) -> np.ndarray:
    """Σ count·(x − fake_quant(x))² over bin centres x, for each candidate row [lo, hi]."""
    scale, zero = affine_qparams(bounds[:, 0], bounds[:, 1], dtype=dtype, symmetric=symmetric)
    qmin, qmax = qrange(dtype)
    nz = hist.counts > 0
    x, c = hist.centers[nz], hist.counts[nz]
    s = scale.astype(np.float64)[:, None]
    z = zero.astype(np.float64)[:, None]
    losses = np.empty(len(bounds))
    for i in range(0, len(bounds), 64):  # chunks bound the temporary memory
        sl = slice(i, i + 64)
        q = np.clip(np.rint(x[None, :] / s[sl]) + z[sl], qmin, qmax)
        losses[sl] = ((x[None, :] - (q - z[sl]) * s[sl]) ** 2 * c[None, :]).sum(axis=1)
    return losses


def kl_loss(counts: np.ndarray, start: int, end: int, levels: int) -> float:
    """KL(p ‖ q): p = bins [start, end) with the clipped tails folded into its edge bins; q =
    p quantized to `levels` equal groups, each group's mass spread over its non-empty bins."""
    p = counts[start:end].astype(np.float64).copy()
    sliced = p.copy()
    p[0] += counts[:start].sum()
    p[-1] += counts[end:].sum()
    n = p.size
    if levels >= n:
        q = sliced
    else:
        group = (np.arange(n) * levels) // n
        nonzero = (sliced > 0).astype(np.float64)
        mass = np.bincount(group, weights=sliced, minlength=levels)
        support = np.bincount(group, weights=nonzero, minlength=levels)
        q = np.where(nonzero > 0, mass[group] / np.maximum(support[group], 1.0), 0.0)
    p = _smooth(p)
    q = _smooth(q)
    if p is None or q is None:
        return math.inf
    return float(np.sum(p * np.log(p / q)))


def _smooth(dist: np.ndarray, eps: float = 1e-4) -> np.ndarray | None:
    """Normalise, then mix in mass eps for every empty bin so the KL divergence is finite."""
    zero = dist == 0
    if zero.all() or eps * zero.sum() >= 1.0:
        return None
    return dist / dist.sum() * (1.0 - eps * zero.sum()) + eps * zero
