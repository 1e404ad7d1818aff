"""Cross-fit check: ranges calibrated on one half of the samples must hold on the other half.

A model is right only if it is right on data it was not calibrated on. Calibration alternates
its first 2·`FOLD_SAMPLES` samples between two folds; each fold has its own observers besides
the full ones. After calibration, the QDQ model built from fold A's ranges runs on fold B's
samples and the reverse; the outputs are compared with the float outputs calibration already
computed. For each direction and output, `DRAWS` random batches of `BATCH` held-out samples
(the size of bridge's own verification: the example input and 3 samples) give SQNRs; the
`SHARE` quantile of them must reach the mode's torch ⇄ QDQ floor, or calibration fails with a
`CalibrationError` that names the output and the tensors to blame.

This sees what a few held-out samples miss: values beyond the calibrated range that occur in
one sample in a hundred (clipped, they ruin outputs built from products of them) and tensors
whose range is set by rare large values, so that typical samples fall on a few int8 levels.
Fitting on half the data is pessimistic for the full model, which sees twice the samples.

The fold models quantize activations only: their weights and biases stay float. Ranges decide
the activations' error alone, and the weights' error is not the fold models' to judge: the real
model rounds its weights (nearest or GPTQ) and then corrects its biases on the QDQ outputs
(`bias_correction.py`), which fold models rounded to nearest and left uncorrected do not
foresee. Measured on EfficientNet-Lite0 int16x8, such fold models reach 17.9 dB, all of it
int8 weight rounding (int16 activations add nothing), while the model bridge builds reaches
27.6 dB. Since the errors of weights and activations add, activations alone under the floor
mean the model cannot meet it; the whole model's error is for verification to measure.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from bridge.artifact import OnnxArtifact
from bridge.errors import CalibrationError
from bridge.quantize.config import QuantConfig
from bridge.quantize.observers import Observer
from bridge.quantize.qdq import quantize_model
from bridge.runtime.runners import OrtRunner
from bridge.runtime.tolerances import floor

log = logging.getLogger(__name__)

#: Samples per fold; their inputs and float outputs stay in memory until the check.
FOLD_SAMPLES = 64
#: With fewer samples per fold (under 2·MIN_FOLD calibration samples) there is no check: the
#: quantile over batches of so few samples is noise.
MIN_FOLD = 16
#: Held-out samples per compared batch, as in bridge's verification (example input + 3).
BATCH = 4
#: Random batches drawn per direction and output (seeded: the check is deterministic).
DRAWS = 400
#: The share of batches allowed below the floor.
SHARE = 0.1
#: SQNR given to a batch matched exactly, or with no signal but some noise (as metrics.sqnr_db).
EXACT_DB = 200.0


@dataclass
class Fold:
    """One half of the calibration samples: its observers, inputs, float outputs and extremes."""

    observers: dict[str, Observer]
    feeds: list[dict[str, np.ndarray]] = field(default_factory=list)
    outputs: list[dict[str, np.ndarray]] = field(default_factory=list)
    extremes: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    #: the activation ranges of the QDQ model built from this fold
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Finding:
    """One (direction, output) of a check: the SHARE quantile of SQNR against the float model
    over random batches of BATCH held-out samples. Direction 0 is fold A's ranges on fold B's
    samples, 1 the reverse."""

    output: str
    sqnr_db: float
    direction: int


class CrossFit:
    """Collects the two folds during calibration and checks them afterwards.

    Args:
        make_observers: a fresh {tensor: observer} for the tensors calibration observes.
        outputs: the model's output names (float ones are compared).
    """

    def __init__(self, make_observers: Callable[[], dict[str, Observer]], outputs: list[str]):
        self.folds = (Fold(make_observers()), Fold(make_observers()))
        self.outputs = outputs
        self.samples = 0

    def add(self, index: int, feeds: Mapping[str, np.ndarray], values: Mapping) -> None:
        """Give calibration sample `index` (its feeds and all observed values) to its fold."""
        self.samples += 1
        fold = self.folds[index % 2]
        if len(fold.feeds) >= FOLD_SAMPLES:
            return
        fold.feeds.append(dict(feeds))
        fold.outputs.append({o: np.asarray(values[o]) for o in self.outputs if o in values})
        for name, obs in fold.observers.items():
            value = values.get(name)
            if value is None or np.asarray(value).dtype.kind != "f":
                continue
            obs.update(value)
            finite = np.asarray(value)[np.isfinite(value)]
            if finite.size:
                fold.extremes.setdefault(name, []).append(
                    (float(finite.min()), float(finite.max()))
                )

    def choose_tail(self, horizon: float) -> None:
        """Give the folds' observers the tail horizon calibration chose for the full ones."""
        for fold in self.folds:
            for obs in fold.observers.values():
                obs.choose_tail(horizon)

    def check(self, artifact: OnnxArtifact, config: QuantConfig) -> Finding | None:
        """Raise CalibrationError when the folds' ranges fail on each other's samples.

        Returns the worst finding (None when the folds are too small to check).
        """
        if min(len(f.feeds) for f in self.folds) < MIN_FOLD:
            log.info(
                "cross-fit check skipped: %d calibration samples (it needs %d)",
                self.samples,
                2 * MIN_FOLD,
            )
            return None
        findings = [
            f
            for d, folds in enumerate((self.folds, self.folds[::-1]))
            for f in self._direction(artifact, config, d, folds)
        ]
        worst = min(findings, key=lambda f: f.sqnr_db, default=None)
        if worst is None:
            return None
        min_db = floor(config.mode, "torch_vs_qdq")
        log.info(
            "cross-fit check: worst output %r at %.1f dB (floor %.1f dB)",
            worst.output,
            worst.sqnr_db,
            min_db,
        )
        if worst.sqnr_db < min_db:
            fit, test = self.folds if worst.direction == 0 else self.folds[::-1]
            diagnosis = _diagnose(fit.ranges, test.extremes)
            raise CalibrationError(self._message(worst, min_db, config.mode, test, diagnosis))
        return worst

    def _direction(
        self,
        artifact: OnnxArtifact,
        config: QuantConfig,
        d: int,
        folds: tuple[Fold, Fold],
    ) -> list[Finding]:
        fit, test = folds
        observed = {t: o for t, o in fit.observers.items() if o.count > 0}
        qdq = quantize_model(artifact, observed, config, float_weights=True)
        tensors = qdq.facts.get("quantization", {}).get("tensors", {})
        fit.ranges = {
            t: tuple(f["range"]) for t, f in tensors.items() if f.get("kind") == "activation"
        }
        runner = OrtRunner(qdq.model, qdq.contract)
        got = [runner.run(feeds) for feeds in test.feeds]
        findings = []
        for name in self.outputs:
            ref = [o.get(name) for o in test.outputs]
            if any(r is None or r.dtype.kind != "f" for r in ref):
                continue
            energy = np.array([_energies(r, g[name]) for r, g in zip(ref, got, strict=True)])
            findings.append(Finding(name, batch_sqnr_quantile(energy, seed=d), d))
        return findings

    def _message(self, worst: Finding, min_db: float, mode: str, test: Fold, diagnosis: str) -> str:
        others = "'dynamic'" if mode == "int16x8" else "'int16x8' or 'dynamic'"
        return (
            f"{mode} calibration does not hold on unseen data: with the ranges of half of the "
            f"{self.samples} calibration samples, output {worst.output!r} of the model with "
            f"quantized activations (float weights) reaches only {worst.sqnr_db:.1f} dB SQNR "
            f"against the float model in the worst {SHARE:.0%} of batches of {BATCH} of the "
            f"{len(test.feeds)} other samples (floor {min_db:.1f} dB). {diagnosis} Give more "
            f"calibration samples that cover the inputs' full range, or convert with "
            f"quantize={others}"
        )


def batch_sqnr_quantile(energy: np.ndarray, *, seed: int = 0) -> float:
    """The SHARE quantile of SQNR over DRAWS random batches of BATCH samples.

    Args:
        energy: [samples, 2]: each sample's Σref² and Σ(ref − out)².
        seed: seeds the batch draws.
    """
    n = energy.shape[0]
    size = min(BATCH, n)
    rng = np.random.default_rng(seed)
    idx = np.argsort(rng.random((DRAWS, n)), axis=1)[:, :size]
    db = _sqnr(energy[idx, 0].sum(1), energy[idx, 1].sum(1))
    return float(np.quantile(db, SHARE))


def _sqnr(signal: np.ndarray | float, noise: np.ndarray | float) -> np.ndarray:
    """10·log10(signal / noise), as `metrics.sqnr_db` treats exact and signal-free cases."""
    signal, noise = np.asarray(signal, np.float64), np.asarray(noise, np.float64)
    with np.errstate(divide="ignore"):
        db = 10.0 * np.log10(np.where(signal > 0, signal, 1.0) / np.where(noise > 0, noise, 1.0))
    db = np.where(noise == 0, EXACT_DB, np.where(signal == 0, -EXACT_DB, db))
    return np.clip(db, -EXACT_DB, EXACT_DB)


def _energies(ref: np.ndarray, out: np.ndarray) -> tuple[float, float]:
    r = np.asarray(ref, np.float64).ravel()
    o = np.asarray(out, np.float64).ravel()
    return float(np.sum(r * r)), float(np.sum((r - o) ** 2))


def _diagnose(
    ranges: Mapping[str, tuple[float, float]],
    extremes: Mapping[str, list[tuple[float, float]]],
    top: int = 3,
) -> str:
    """Name the tensors whose held-out values leave the fitted `ranges` most (by over 1 % of
    the range), else those whose range is widest next to a typical sample's peak."""
    beyond: dict[str, tuple[float, float]] = {}
    spread: dict[str, float] = {}
    for name, (lo, hi) in ranges.items():
        if name not in extremes:
            continue
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        width = max(hi - lo, 1e-30)
        ext = np.asarray(extremes[name], np.float64)
        over = np.maximum(np.maximum(ext[:, 1] - hi, lo - ext[:, 0]), 0.0) / width
        if over.max() > 0.01:
            beyond[name] = (float(over.max()), float(np.mean(over > 0.01)))
        peak = np.median(np.maximum(np.abs(ext[:, 0]), np.abs(ext[:, 1])))
        spread[name] = width / max(float(peak), 1e-30)
    if beyond:
        worst = sorted(beyond.items(), key=lambda kv: -kv[1][0])[:top]
        parts = [f"{n!r} by {o:.0%} of its range in {s:.0%} of samples" for n, (o, s) in worst]
        return "Held-out values exceed the calibrated ranges of " + "; ".join(parts) + "."
    worst_spread = sorted(spread.items(), key=lambda kv: -kv[1])[:top]
    parts = [f"{n!r} ({r:.0f}× its median sample's peak)" for n, r in worst_spread]
    return (
        "No held-out value leaves the calibrated ranges: rare large values set ranges far "
        "wider than a typical sample, which then falls on a few int8 levels: "
        + ", ".join(parts)
        + "."
    )
