"""Comparison metrics between a reference array and a candidate. Pure numpy, no runtimes."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: SQNR reported when the candidate equals the reference exactly.
SQNR_EXACT_DB = 200.0


def sqnr_db(ref: np.ndarray, out: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB: 10·log10(Σref² / Σ(ref−out)²)."""
    ref64 = np.asarray(ref, np.float64).ravel()
    out64 = np.asarray(out, np.float64).ravel()
    noise = float(np.sum((ref64 - out64) ** 2))
    signal = float(np.sum(ref64**2))
    if noise == 0.0:
        return SQNR_EXACT_DB
    if signal == 0.0:
        return -SQNR_EXACT_DB
    return float(min(SQNR_EXACT_DB, 10.0 * np.log10(signal / noise)))


def cosine(ref: np.ndarray, out: np.ndarray) -> float:
    """Cosine similarity of the flattened arrays (1.0 when both are zero)."""
    a = np.asarray(ref, np.float64).ravel()
    b = np.asarray(out, np.float64).ravel()
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def top1_agreement(ref: np.ndarray, out: np.ndarray) -> float | None:
    """Share of rows whose argmax over the last axis agrees; None unless the output is [N, C]."""
    if ref.ndim != 2 or ref.shape[-1] < 2:
        return None
    return float(np.mean(np.argmax(ref, -1) == np.argmax(out, -1)))


def lsb_error(ref: np.ndarray, out: np.ndarray, scale: float) -> tuple[float, float]:
    """(max, 99th percentile) of |ref − out| in units of one quantization step."""
    err = np.abs(np.asarray(ref, np.float64) - np.asarray(out, np.float64)).ravel() / scale
    if err.size == 0:
        return 0.0, 0.0
    return float(err.max()), float(np.percentile(err, 99))


@dataclass(frozen=True)
class Comparison:
    """The result of comparing one output between two runtimes."""

    output: str
    reference: str
    candidate: str
    max_abs: float
    mean_abs: float
    sqnr_db: float
    cosine: float
    top1: float | None
    min_sqnr_db: float
    passed: bool
    lsb_max: float | None = None
    lsb_p99: float | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(
    ref: np.ndarray,
    out: np.ndarray,
    *,
    output: str,
    pair: tuple[str, str],
    min_sqnr_db: float,
    lsb_scale: float | None = None,
) -> Comparison:
    """Compare two arrays for one output and judge against the SQNR floor."""
    ref = np.asarray(ref)
    out = np.asarray(out)
    if ref.shape != out.shape:
        return Comparison(
            output,
            pair[0],
            pair[1],
            float("inf"),
            float("inf"),
            -SQNR_EXACT_DB,
            0.0,
            None,
            min_sqnr_db,
            False,
            note=f"shape mismatch {ref.shape} vs {out.shape}",
        )
    diff = np.abs(ref.astype(np.float64) - out.astype(np.float64))
    finite = bool(np.all(np.isfinite(out)))
    s = sqnr_db(ref, out) if finite else -SQNR_EXACT_DB
    lsb = lsb_error(ref, out, lsb_scale) if lsb_scale else (None, None)
    return Comparison(
        output=output,
        reference=pair[0],
        candidate=pair[1],
        max_abs=float(diff.max()) if diff.size else 0.0,
        mean_abs=float(diff.mean()) if diff.size else 0.0,
        sqnr_db=s,
        cosine=cosine(ref, out),
        top1=top1_agreement(ref, out),
        min_sqnr_db=min_sqnr_db,
        passed=finite and s >= min_sqnr_db,
        lsb_max=lsb[0],
        lsb_p99=lsb[1],
        note="" if finite else "non-finite values in candidate",
    )
