"""Run every runtime on the same inputs and judge each runtime pair sample by sample.

Every sample is judged on its own: pooling samples into one SQNR lets one badly wrong sample
hide behind good ones. A pair's verdict on an output is its worst sample's; the report keeps
that sample's metrics, its index, and every sample's SQNR and floor. Sample 0 is the example
input (`gate.verification_feeds`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bridge.modes import MODES
from bridge.runtime import tolerances
from bridge.runtime.metrics import Comparison, compare, top1_agreement
from bridge.runtime.runners import Runner

log = logging.getLogger(__name__)

#: {runtime: [{output name: array} per sample]}
Samples = dict[str, list[dict[str, np.ndarray]]]


def run_all(runners: Mapping[str, Runner], feeds: Sequence[Mapping[str, np.ndarray]]) -> Samples:
    """{runner name: [its outputs on each feed]}."""
    return {
        name: [{k: np.asarray(v) for k, v in runner.run(f).items()} for f in feeds]
        for name, runner in runners.items()
    }


def concat(samples: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """{output: every sample's array joined on axis 0 (stacked when 0-d)}, as verify.npz keeps."""
    return {
        k: np.concatenate([np.asarray(s[k]) for s in samples], axis=0)
        if np.asarray(samples[0][k]).ndim
        else np.stack([np.asarray(s[k]) for s in samples])
        for k in samples[0]
    }


def split(
    arrays: Mapping[str, np.ndarray], like: Sequence[Mapping[str, np.ndarray]]
) -> list[dict[str, np.ndarray]]:
    """The inverse of `concat`: one dict per sample, shaped as the samples in `like`."""
    parts = {k: np.split(np.asarray(v), len(like), axis=0) for k, v in arrays.items()}
    return [
        {k: p[i].reshape(np.shape(like[i][k])) if k in like[i] else p[i] for k, p in parts.items()}
        for i in range(len(like))
    ]


def check(
    samples: Mapping[str, Sequence[Mapping[str, np.ndarray]]],
    *,
    mode: str,
    output_names: Sequence[str],
    lsb_scales: Mapping[str, float] | None = None,
    predicted: Mapping[str, Sequence[float]] | None = None,
) -> dict[str, Any]:
    """Judge every sample of every pair `mode` checks, for every output.

    Args:
        samples: {runtime: [{output: array} per sample]}; pairs with a runtime absent are
            skipped (torch when a folder stores no reference).
        lsb_scales: {output: its quantization step}, for LSB errors and the "lsb" floors.
        predicted: {output: the noise model's SQNR to torch per sample}, for "noise" floors.

    Returns:
        {"pairs": {pair: {output: worst sample's comparison + per-sample lists}},
        "passed": bool, "failures": [...]}
    """
    pairs: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    for pair in MODES.get(mode).pairs:
        ref_name, cand_name = pair.split("_vs_")
        if ref_name not in samples or cand_name not in samples:
            continue
        entry: dict[str, Any] = {}
        for out in output_names:
            scale = (lsb_scales or {}).get(out) if cand_name == "tflite" else None
            refs = [s[out] for s in samples[ref_name]]
            cands = [s[out] for s in samples[cand_name]]
            floors = _floors(mode, pair, refs, scale, (predicted or {}).get(out))
            entry[out], failure = _judge(pair, out, refs, cands, floors=floors, scale=scale)
            if failure:
                failures.append(failure)
        pairs[pair] = entry
    return {"pairs": pairs, "passed": not failures, "failures": failures}


def _floors(
    mode: str,
    pair: str,
    refs: Sequence[np.ndarray],
    scale: float | None,
    predicted: Sequence[float] | None,
) -> list[float]:
    """Each sample's SQNR floor under `pair`'s rule (`Mode.rule`)."""
    rule = MODES.get(mode).rule(pair)
    if rule == "lsb" and scale:
        power = [float(np.mean(np.square(np.asarray(r, np.float64)))) for r in refs]
        return [
            tolerances.lsb_floor_db(p, scale, mode, predicted_db=None if predicted is None else q)
            for p, q in zip(power, predicted or [None] * len(power), strict=True)
        ]
    if rule == "noise" and predicted is not None:
        return [tolerances.noise_floor_db(p, mode) for p in predicted]
    return [MODES.get(mode).floor(pair)] * len(refs)


def _judge(
    pair: str,
    out: str,
    refs: Sequence[np.ndarray],
    cands: Sequence[np.ndarray],
    *,
    floors: Sequence[float],
    scale: float | None,
) -> tuple[dict[str, Any], str | None]:
    """(the report entry of one output under one pair, its failure line or None)."""
    ref_name, cand_name = pair.split("_vs_")
    comps = [
        compare(
            r,
            c,
            output=out,
            pair=(ref_name, cand_name),
            min_sqnr_db=f,
            lsb_scale=scale,
        )
        for r, c, f in zip(refs, cands, floors, strict=True)
    ]
    worst = min(range(len(comps)), key=lambda i: _margin(comps[i]))
    c = comps[worst]
    entry = {
        **c.to_dict(),
        "sample": worst,
        "samples": len(comps),
        "top1": _pooled_top1(refs, cands),
        "sqnr_db_per_sample": [round(x.sqnr_db, 2) for x in comps],
        "floor_db_per_sample": [round(x.min_sqnr_db, 2) for x in comps],
    }
    if c.passed:
        return entry, None
    note = f" {c.note}" if c.note else ""
    return entry, (
        f"{pair} output {out!r} sample {worst}: SQNR {c.sqnr_db:.1f} dB < "
        f"{c.min_sqnr_db:.1f} dB (max abs {c.max_abs:.3g}){note}"
    )


def _margin(c: Comparison) -> tuple[bool, float]:
    """Sort key: failed samples first, then the smallest SQNR above the floor."""
    return (c.passed, c.sqnr_db - c.min_sqnr_db)


def _pooled_top1(refs: Sequence[np.ndarray], cands: Sequence[np.ndarray]) -> float | None:
    """Top-1 agreement over every sample's rows (one [1, C] sample alone says 0 or 1)."""
    try:
        return top1_agreement(np.concatenate(refs), np.concatenate(cands))
    except ValueError:  # 0-d outputs or shapes that differ between runtimes
        return None
