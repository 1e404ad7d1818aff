"""convert_qdq(): a QDQ ONNX file bridge did not make → a verified integer .tflite with its scales.

read (contract, stored types) → check TFLite's kernel rules (refuse what no exact lowering can
keep) → facts in the form bridge's quantizer writes → bridge's integer lowering, unchanged →
prove every TFLite tensor kept its QDQ parameters → QDQ ORT ⇄ LiteRT parity in output steps on
every sample → the folder, through bridge.outdir's staging and atomic swap. There is no torch
model: QDQ ORT is the reference, and verify.npz stores its outputs.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path
from typing import Any

from bridge import outdir
from bridge.artifact import OnnxArtifact, TfliteArtifact
from bridge.errors import ConfigError, ParityError
from bridge.importqdq import gate, kept, kernel_rules, read
from bridge.lower import lower
from bridge.lower.integer.qdq import read_qdq


@dataclass(frozen=True)
class ImportOptions:
    """Options of convert_qdq (keyword-only there)."""

    calibration: Any = None
    verify_samples: int = 3
    seed: int = 0
    nhwc_inputs: bool = False
    overwrite: bool = False
    model_name: str | None = None

    def __post_init__(self) -> None:
        for name in ("verify_samples", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
                raise ConfigError(f"{name} must be an integer ≥ 0, got {value!r}")


def convert_qdq(path: str | Path, output_dir: str | Path, **options: Any) -> Any:
    """Lower the QDQ ONNX file `path` to a verified integer .tflite in `output_dir`.

    Args:
        path: a QDQ ONNX model (QuantizeLinear/DequantizeLinear), e.g. from ONNX Runtime's
            quantize_static with QuantFormat.QDQ.
        output_dir: folder for model.qdq.onnx (the input), model.tflite, verify.npz and
            report.json/md/html; written only once parity has passed.
        **options: see ImportOptions (calibration: verify on its first samples, else random).

    Returns:
        a bridge.api.Conversion (onnx_path and qdq_path are the copied input).

    Raises:
        QdqRuleError: a scale breaks a TFLite kernel rule (names the node, tensor and rule).
        ParityError: QDQ ORT and LiteRT disagree beyond the output-step budget; nothing written.
    """
    opts = _options(options)
    model, data = read.load(path)
    outdir.check_target(Path(output_dir), fingerprint=fingerprint(data), overwrite=opts.overwrite)
    built = build(model, data, str(path), opts)
    return finish(Path(output_dir), built, opts)


@dataclass
class Built:
    """An imported QDQ model lowered and judged, not yet written: what finish() needs."""

    artifact: OnnxArtifact
    lowered: TfliteArtifact
    feeds: list[dict[str, Any]]
    result: dict[str, Any]
    report: dict[str, Any]
    data: bytes


def build(model: Any, data: bytes, source: str, opts: ImportOptions) -> Built:
    """Check the rules, lower, prove the scales kept and run QDQ ORT ⇄ LiteRT on every feed."""
    t0 = time.perf_counter()
    contract = read.contract(model)
    qdq = read_qdq(model)
    stored = read.stored_dtypes(model)
    mode = kernel_rules.activation_mode(qdq, stored)
    kernel_rules.check(qdq, stored, mode=mode)
    facts = read.quantization_facts(qdq, stored, mode)
    artifact = OnnxArtifact(model, contract, stage="quantize", facts={"quantization": facts})
    lowered = _lower(artifact, mode, opts)
    summary = kept.compare(
        kept.tflite_qparams(lowered.data), lowered.facts["tensor_map"], facts["tensors"]
    )
    kept.require_kept(summary)
    feeds = gate.feeds(contract, opts.calibration, samples=opts.verify_samples, seed=opts.seed)
    result = gate.run(artifact, lowered, feeds, mode=mode)
    report = gate.report(
        artifact,
        lowered,
        result,
        source={"path": source, "bytes": len(data), "fingerprint": fingerprint(data)},
        scales_kept=summary,
        seconds=round(time.perf_counter() - t0, 3),
        model_name=opts.model_name,
    )
    return Built(artifact, lowered, feeds, result, report, data)


def finish(out: Path, built: Built, opts: ImportOptions) -> Any:
    """Raise ParityError if any pair failed (nothing written), else write the folder."""
    report = built.report
    if not report["passed"]:
        raise ParityError(
            "parity check failed, nothing was written: " + "; ".join(report["failures"]),
            report=report,
        )
    return gate.write(
        out, built.data, built.lowered, built.feeds, built.result, report, overwrite=opts.overwrite
    )


def fingerprint(data: bytes) -> str:
    """The folder fingerprint of an imported model: its bytes' SHA-256, 16 hex digits."""
    return hashlib.sha256(data).hexdigest()[:16]


def _options(options: dict[str, Any]) -> ImportOptions:
    known = set(ImportOptions.__dataclass_fields__)
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown} for a QDQ model; known: {sorted(known)}")
    return ImportOptions(**options)


def _lower(artifact: OnnxArtifact, mode: str, opts: ImportOptions) -> TfliteArtifact:
    return lower(artifact, mode=mode, nhwc=opts.nhwc_inputs)
