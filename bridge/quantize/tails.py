"""Tail-aware ranges: how far unseen data will reach beyond the calibration extremes.

A calibration range ends at the largest value seen, but a fresh sample exceeds the largest of N
calibration samples with probability about 1/(N + 1), and in a heavy-tailed tensor (x³, x·y·z)
it then exceeds it by far: the value is clipped and, where such values carry most of the
output's energy, the output is wrong. So the range is extrapolated from the per-sample extremes.

Let m₁ ≥ m₂ ≥ … ≥ m_N be the maxima of the N calibration updates (minima are mirrored), and
k = ⌈√N⌉. Above the threshold u = m_(k+1), the excesses of a tail in the Gumbel domain (normal,
exponential, and products of such tensors) are close to exponential with mean σ, estimated by
the mean σ̂ of the k excesses (standard error σ̂/√k). A fresh update then exceeds
u + σ·ln(k / (N·p)) with probability p; with p = 1/(h·N) (the extreme of h times as much data
as the calibration, h = `TAIL_HORIZON`) and σ taken `TAIL_SE` standard errors above σ̂ (tails
heavier than exponential, like x⁴, and unlucky calibration sets both underestimate it):

    level = u + σ̂·(1 + TAIL_SE/√k)·ln(h·k)

The range is widened to that level only where clipping can matter and was not chosen:

- the tensor's largest value carries on average at least `PEAK_SHARE` of an update's energy
  Σx² (clipping a fraction f of that value costs f²·share of it: in a 1000-logit output nothing
  a tail can do, in a tensor of a few values everything);
- the observer kept the observed extreme (its range ends within `REACH` of the span from it): an
  observer that clipped the tail on purpose keeps its clip.

Light tails move little (σ is small next to u), a constant extreme not at all (σ = 0).

Calibration turns the extension on (`OutputEnergy.horizon`) only for models whose outputs are
concentrated across samples: some output's most energetic calibration sample carries at least
`CONCENTRATION` times its mean energy (x⁴ of a scalar; not 1000 logits nor a LayerNorm'd
sequence). Then SQNR on fresh data is set by rare large samples, the ones a clip ruins; where
energy is spread evenly, clipping a rare value costs little and resolution matters more. The
extension is not free: a model with concentrated outputs whose clips do little harm pays in
resolution (an unnormalised attention block with dominant tokens: 17 dB instead of 21 dB).
With fewer than `MIN_SAMPLES` updates nothing is extrapolated. What this misses (tails heavier
still, products of tensors extended separately) is left to `bridge.quantize.crossfit`.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping

import numpy as np

#: Extrapolate to the extreme of this many times the calibration data.
TAIL_HORIZON = 32.0
#: σ is taken this many standard errors above its estimate.
TAIL_SE = 2.0
#: Fewer updates than this (k < 6 excesses) give no usable tail estimate: ranges stay as observed.
MIN_SAMPLES = 32
#: A range that ends within this share of the observed span from an extreme "kept" it.
REACH = 0.01
#: Extend only tensors whose largest value carries at least this share of an update's energy
#: (on average): clipping a fraction f of it costs f²·share of the update's energy.
PEAK_SHARE = 0.02
#: Extend ranges when an output's largest per-sample energy reaches this many times its mean
#: (over 125 samples, Gaussian outputs of 128 values reach about 1.4, of 16 about 2, of one
#: value about 9).
CONCENTRATION = 2.0
#: Per-update extremes kept per side (k = ⌈√N⌉ needs k + 1 of them: N up to 65,000).
KEEP = 256


class Extremes:
    """The largest per-update maxima and smallest per-update minima (bounded memory)."""

    def __init__(self, keep: int = KEEP) -> None:
        self.keep = keep
        self.count = 0
        self._hi: list[float] = []  # min-heaps of the largest maxima and of the negated minima
        self._lo: list[float] = []
        self._share = 0.0

    def add(self, lo: float, hi: float, energy: float) -> None:
        """Record one update whose minimum is `lo`, maximum `hi` and Σx² `energy`."""
        self.count += 1
        if energy > 0:
            self._share += max(lo * lo, hi * hi) / energy
        for heap, value in ((self._hi, hi), (self._lo, -lo)):
            if len(heap) < self.keep:
                heapq.heappush(heap, value)
            elif value > heap[0]:
                heapq.heapreplace(heap, value)

    def levels(self, horizon: float) -> tuple[float, float] | None:
        """(low, high) levels unseen updates reach (see module docstring), or None if too few."""
        if self.count < MIN_SAMPLES or self._share < PEAK_SHARE * self.count:
            return None
        return (
            -tail_level(sorted(self._lo, reverse=True), self.count, horizon),
            tail_level(sorted(self._hi, reverse=True), self.count, horizon),
        )


class OutputEnergy:
    """Per-sample output energies Σy² over calibration: their largest and their sum."""

    def __init__(self) -> None:
        self.count = 0
        self.largest: dict[str, float] = {}
        self.total: dict[str, float] = {}

    def update(self, outputs: Mapping[str, np.ndarray]) -> None:
        """Add one calibration sample's float outputs."""
        self.count += 1
        for name, y in outputs.items():
            y64 = np.asarray(y, np.float64).ravel()
            energy = float(np.dot(y64, y64)) if np.all(np.isfinite(y64)) else 0.0
            self.largest[name] = max(self.largest.get(name, 0.0), energy)
            self.total[name] = self.total.get(name, 0.0) + energy

    def concentration(self) -> float:
        """max over outputs of (largest sample energy) / (mean sample energy); 0 if no energy."""
        ratios = [
            self.largest[n] * self.count / self.total[n] for n in self.total if self.total[n] > 0
        ]
        return max(ratios, default=0.0)

    def horizon(self) -> float:
        """TAIL_HORIZON for concentrated outputs (given MIN_SAMPLES samples), else 0."""
        if self.count < MIN_SAMPLES or self.concentration() < CONCENTRATION:
            return 0.0
        return TAIL_HORIZON


def tail_level(top: list[float], n: int, horizon: float) -> float:
    """u + σ̂·(1 + TAIL_SE/√k)·ln(h·k) from the largest per-update extremes `top` (descending)
    of `n` updates.

    Never below the largest observed extreme.
    """
    k = min(math.ceil(math.sqrt(n)), len(top) - 1)
    if k < 1:
        return top[0]
    excess = np.asarray(top[:k], np.float64) - top[k]
    sigma = float(excess.mean()) * (1.0 + TAIL_SE / math.sqrt(k))
    return max(top[0], top[k] + sigma * math.log(horizon * k))


def widen(
    lo: float, hi: float, observed: tuple[float, float], levels: tuple[float, float] | None
) -> tuple[float, float]:
    """Extend each side of [lo, hi] that reached its `observed` extreme out to its `levels`."""
    if levels is None:
        return lo, hi
    reach = REACH * (observed[1] - observed[0])
    if hi >= observed[1] - reach:
        hi = max(hi, levels[1])
    if lo <= observed[0] + reach:
        lo = min(lo, levels[0])
    return lo, hi
