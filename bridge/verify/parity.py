"""Run every runtime on the same inputs and compare outputs pair by pair against the floors."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bridge.verify import tolerances
from bridge.verify.metrics import compare
from bridge.verify.runners import Runner

log = logging.getLogger(__name__)


def run_all(runners: Mapping[str, Runner], feeds: Sequence[Mapping[str, np.ndarray]]) -> dict:
    """{runner name: {output name: outputs of every sample concatenated on axis 0}}."""
    results: dict[str, dict[str, np.ndarray]] = {}
    for name, runner in runners.items():
        per_sample = [runner.run(f) for f in feeds]
        results[name] = {
            k: np.concatenate([np.asarray(s[k]) for s in per_sample], axis=0)
            if np.asarray(per_sample[0][k]).ndim
            else np.stack([np.asarray(s[k]) for s in per_sample])
            for k in per_sample[0]
        }
    return results


def check(
    results: Mapping[str, Mapping[str, np.ndarray]],
    *,
    mode: str,
    output_names: Sequence[str],
    model: str | None = None,
    lsb_scales: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Compare the runtimes in `results` for every pair `mode` checks.

    Pairs whose runtimes are both absent are skipped (for example torch when re-verifying a
    folder with no stored reference). Returns {"pairs": {pair: {output: comparison}},
    "passed": bool, "failures": [...]} .
    """
    pairs: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    for pair in tolerances.pairs(mode):
        ref_name, cand_name = pair.split("_vs_")
        if ref_name not in results or cand_name not in results:
            continue
        floor = tolerances.floor(mode, pair, model=model)
        entry: dict[str, Any] = {}
        for out in output_names:
            scale = (lsb_scales or {}).get(out) if cand_name == "tflite" else None
            c = compare(
                results[ref_name][out],
                results[cand_name][out],
                output=out,
                pair=(ref_name, cand_name),
                min_sqnr_db=floor,
                lsb_scale=scale,
            )
            entry[out] = c.to_dict()
            if not c.passed:
                failures.append(
                    f"{pair} output {out!r}: SQNR {c.sqnr_db:.1f} dB < {floor:.1f} dB "
                    f"(max abs {c.max_abs:.3g}){' ' + c.note if c.note else ''}"
                )
        pairs[pair] = entry
    return {"pairs": pairs, "passed": not failures, "failures": failures}
