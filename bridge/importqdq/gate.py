"""The parity gate and the output folder of an imported QDQ model.

QDQ ORT is the reference (there is no torch model): the .tflite must match it in output
steps on every sample, under the same rule as bridge's own conversions (`qdq_vs_tflite`,
`tolerances.MAX_RMS_LSB`). The folder holds the files a normal conversion writes where they
exist: model.qdq.onnx (the input, byte for byte), model.tflite, verify.npz (inputs and the
QDQ outputs as `qdq/<output>`), report.json/md/html.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bridge.api import VERSION, Conversion
from bridge.artifact import OnnxArtifact, TfliteArtifact
from bridge.contract import IOContract
from bridge.outdir import FILES
from bridge.quantize.calibrate import load_calibration, sample_feeds
from bridge.runtime.feeds import random_feeds
from bridge.runtime.runners import LiteRTRunner, OrtRunner
from bridge.verify import parity
from bridge.verify.folder import output_scales
from bridge.verify.report_files import commit_folder


def feeds(
    contract: IOContract, calibration: Any, *, samples: int, seed: int
) -> list[dict[str, np.ndarray]]:
    """1 + `samples` feeds: the first ones of `calibration` (checked), then seeded random."""
    out: list[dict[str, np.ndarray]] = []
    if calibration is not None:
        for index, sample in enumerate(load_calibration(calibration, contract)):
            if index > samples:
                break
            out.append(sample_feeds(sample, contract, index))
    next_seed = seed
    while len(out) < 1 + samples:
        out.append(random_feeds(contract, seed=next_seed))
        next_seed += 1
    return out


def run(
    qdq: OnnxArtifact, lowered: TfliteArtifact, feeds: list[dict[str, np.ndarray]], *, mode: str
) -> dict[str, Any]:
    """Run QDQ ORT and LiteRT on every feed and judge qdq ⇄ tflite in output steps."""
    runners = {
        "qdq": OrtRunner(qdq.model, qdq.contract),
        "tflite": LiteRTRunner(lowered.data, lowered.contract, user_contract=qdq.contract),
    }
    samples = parity.run_all(runners, feeds)
    tensors = qdq.facts["quantization"]["tensors"]
    verdict = parity.check(
        samples,
        mode=mode,
        output_names=qdq.contract.output_names,
        lsb_scales=output_scales(tensors, qdq.contract.output_names),
    )
    return {"samples": samples, "verdict": verdict}


def report(
    qdq: OnnxArtifact, lowered: TfliteArtifact, result: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    """report.json's content: the usual keys where they apply, plus `source` and `scales_kept`."""
    verdict = result["verdict"]
    return {
        "bridge_version": VERSION,
        "fingerprint": extra["source"]["fingerprint"],
        "model": extra.get("model_name"),
        "mode": lowered.mode,
        "imported_qdq": True,
        "source": extra["source"],
        "layout": "NHWC" if lowered.contract.nhwc else "NCHW",
        "contract": qdq.contract.to_dict(),
        "tflite_contract": lowered.contract.to_dict(),
        "sizes": {"qdq_onnx_bytes": extra["source"]["bytes"], "tflite_bytes": lowered.size_bytes},
        "seconds": {"total": extra["seconds"]},
        "lowering": dict(lowered.facts),
        "scales_kept": extra["scales_kept"],
        "parity": verdict["pairs"],
        "passed": verdict["passed"],
        "failures": verdict["failures"],
        "quantization": qdq.facts["quantization"],
    }


def write(
    out: Path,
    data: bytes,
    lowered: TfliteArtifact,
    feeds: list[dict[str, np.ndarray]],
    result: dict[str, Any],
    report: dict[str, Any],
    *,
    overwrite: bool,
) -> Any:
    """Stage the folder's files beside `out` and swap it in (bridge.outdir)."""

    def write(tmp: Path) -> list[str]:
        (tmp / FILES["qdq"]).write_bytes(data)
        (tmp / FILES["tflite"]).write_bytes(lowered.data)
        return [FILES["qdq"], FILES["tflite"]]

    arrays = {f"input/{i}/{k}": v for i, f in enumerate(feeds) for k, v in f.items()}
    arrays.update({f"qdq/{k}": v for k, v in parity.concat(result["samples"]["qdq"]).items()})
    placed = commit_folder(out, report, write=write, samples=arrays, overwrite=overwrite)
    return Conversion(
        tflite_path=placed[FILES["tflite"]],
        onnx_path=placed[FILES["qdq"]],
        report=report,
        qdq_path=placed[FILES["qdq"]],
        output_dir=out,
    )
