"""convert() = export → passes → quantize → lower → verify, then an atomic write of the results."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import onnx

from bridge import outdir
from bridge.artifact import OnnxArtifact, TfliteArtifact
from bridge.contract import IOContract
from bridge.errors import ConfigError, ParityError
from bridge.export import DEFAULT_OPSET, ExportConfig, check_opset, export
from bridge.lower import lower
from bridge.modes import MODES
from bridge.outdir import FILES
from bridge.passes import run_passes
from bridge.quantize import quantize
from bridge.quantize.calibrate import load_calibration, sample_feeds
from bridge.quantize.config import IO_DTYPES, WEIGHT_ROUNDING, QuantConfig
from bridge.quantize.observers import OBSERVERS
from bridge.verify.gate import CHECK_BATCH, GateResult, run_gate, verification_feeds
from bridge.verify.localize import localize_conversion
from bridge.verify.report_files import commit_folder

log = logging.getLogger(__name__)

VERSION = "0.1.0"


@dataclass(frozen=True)
class ConvertOptions:
    """Every option of convert(), keyword-only there. Unknown names are a ConfigError."""

    input_names: tuple[str, ...] | None = None
    output_names: tuple[str, ...] | None = None
    input_layouts: tuple[str, ...] | None = None
    opset: int = DEFAULT_OPSET
    dynamic_batch: bool = False
    nhwc_inputs: bool = False
    passes: tuple[str, ...] | None = None
    observer: str = "histogram"
    observer_options: Mapping[str, Any] = field(default_factory=dict)
    io_dtype: str = "float32"
    weight_rounding: str = "gptq"
    bias_correction: bool = True
    equalize: bool = True
    overwrite: bool = False
    verify_samples: int = 3
    seed: int = 0
    model_name: str | None = None

    def __post_init__(self) -> None:
        check_opset(self.opset)
        for name in ("verify_samples", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
                raise ConfigError(f"{name} must be an integer ≥ 0, got {value!r}")
        for name in ("input_names", "output_names", "input_layouts", "passes"):
            if isinstance(getattr(self, name), str):
                raise ConfigError(f"{name} must be a list of names, not one string")
        OBSERVERS.get(self.observer)  # ConfigError listing the known observers
        for name, allowed in (("io_dtype", IO_DTYPES), ("weight_rounding", WEIGHT_ROUNDING)):
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"{name} {getattr(self, name)!r} is not supported; choose one of: "
                    f"{list(allowed)}"
                )

    @classmethod
    def from_kwargs(cls, options: Mapping[str, Any]) -> ConvertOptions:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"unknown option(s) {unknown}; known: {sorted(known)}")
        fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
        return cls(**fixed)


@dataclass(frozen=True)
class Conversion:
    """What convert() produced: the verified .tflite, the optimised float ONNX and the report."""

    tflite_path: Path
    onnx_path: Path
    report: dict[str, Any]
    qdq_path: Path | None = None
    output_dir: Path | None = None

    @property
    def passed(self) -> bool:
        return bool(self.report.get("passed"))


def convert(
    model: object,
    example_inputs: Sequence[object],
    output_dir: str | Path,
    *,
    quantize: str | None = None,
    calibration: Iterable[Any] | None = None,
    **options: Any,
) -> Conversion:
    """Convert a torch model to a verified .tflite in `output_dir`.

    Args:
        model: a torch.nn.Module (put in eval mode).
        example_inputs: one tensor per model input.
        output_dir: folder for model.onnx, model.opt.onnx, [model.qdq.onnx], model.tflite and
            report.json / report.md. Written only once every file has passed its parity check.
        quantize: None (fp32), "fp16", "dynamic", "int8" or "int16x8".
        calibration: an iterable of input tuples (or .npy/.npz path, or image folder) for
            "int8" and "int16x8". Other modes verify on its first `verify_samples` samples
            instead of random inputs (give it for inputs random values don't fit, such as
            token ids and attention masks).
        **options: see ConvertOptions.

    Raises:
        ParityError: a runtime pair missed its SQNR floor; nothing is written.
        BridgeError: any other user-caused failure, with what to do next.
    """
    mode = _mode(quantize)
    opts = ConvertOptions.from_kwargs(options)
    out = Path(output_dir)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    with _timed(timings, "export"):
        exported = _export(model, example_inputs, opts)
    fingerprint = hashlib.sha256(exported.serialized()).hexdigest()[:16]
    outdir.check_target(out, fingerprint=fingerprint, overwrite=opts.overwrite)
    built, calib_samples = _build(exported, mode, calibration, opts, timings)

    with _timed(timings, "verify"):
        feeds = _feeds(example_inputs, built, calib_samples, opts)
        gate = _gate(model, built, feeds, mode, opts)
    with _timed(timings, "layers"):
        layers = localize_conversion(model, *built, feeds, model_name=opts.model_name)
    timings["total"] = time.perf_counter() - t_all

    report = _report(
        mode=mode,
        opts=opts,
        fingerprint=fingerprint,
        built=built,
        verdict=gate.verdict,
        timings=timings,
    )
    report.update(layers=layers, **_batched(gate))
    if not gate.passed:
        raise ParityError(
            "parity check failed, nothing was written: " + "; ".join(gate.verdict["failures"]),
            report=report,
        )
    return _write(out, overwrite=opts.overwrite, report=report, built=built, gate=gate, feeds=feeds)


class _Built(NamedTuple):
    """The four models one conversion makes, in pipeline order."""

    exported: OnnxArtifact
    optimised: OnnxArtifact
    qdq: OnnxArtifact | None
    lowered: TfliteArtifact


def _export(model: object, example_inputs: Sequence[object], opts: ConvertOptions) -> OnnxArtifact:
    config = ExportConfig(
        input_names=opts.input_names,
        output_names=opts.output_names,
        opset=opts.opset,
        dynamic_batch=opts.dynamic_batch,
        input_layouts=opts.input_layouts,
    )
    return export(model, example_inputs, config)


def _build(
    exported: OnnxArtifact,
    mode: str,
    calibration: Iterable[Any] | None,
    opts: ConvertOptions,
    timings: dict[str, float],
) -> tuple[_Built, list[dict[str, np.ndarray]]]:
    """Passes, quantization (QDQ modes) and lowering; also the samples kept to verify on."""
    with _timed(timings, "passes"):
        optimised = _run_passes(exported, opts)
    qdq: OnnxArtifact | None = None
    calib_samples: list[dict[str, np.ndarray]] = []
    if MODES.get(mode).has_qdq:
        with _timed(timings, "quantize"):
            qdq, calib_samples = _quantize(optimised, mode, calibration, opts)
    if not MODES.get(mode).needs_calibration and calibration is not None:  # samples to verify on
        calib_samples = _first_samples(calibration, optimised.contract, opts.verify_samples)
    with _timed(timings, "lower"):
        lowered = _lower(qdq or optimised, mode, opts)
    return _Built(exported, optimised, qdq, lowered), calib_samples


def _gate(model: object, built: _Built, feeds: list, mode: str, opts: ConvertOptions) -> GateResult:
    """The parity gate over every runtime pair of `built`."""
    return run_gate(
        model,
        built.optimised,
        built.qdq,
        built.lowered,
        feeds,
        mode=mode,
        model_name=opts.model_name,
        dynamic_batch=opts.dynamic_batch,
        seed=opts.seed,
    )


def _mode(quantize: str | None) -> str:
    mode = "fp32" if quantize in (None, "fp32", "float32") else quantize
    if mode not in MODES:
        known = tuple(MODES.names())
        raise ConfigError(f"quantize={quantize!r} is not a mode; choose None or one of {known}")
    return str(mode)


class _timed:
    def __init__(self, timings: dict[str, float], key: str) -> None:
        self.timings, self.key = timings, key

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()
        log.info("%s ...", self.key)

    def __exit__(self, *exc: object) -> None:
        self.timings[self.key] = round(time.perf_counter() - self.t0, 3)


def _run_passes(artifact: OnnxArtifact, opts: ConvertOptions) -> OnnxArtifact:
    return run_passes(artifact, opts.passes, seed=opts.seed)


def _quantize(
    artifact: OnnxArtifact, mode: str, calibration: Iterable[Any] | None, opts: ConvertOptions
) -> tuple[OnnxArtifact, list[dict[str, np.ndarray]]]:
    config = QuantConfig(
        mode=mode,
        observer=opts.observer,
        observer_options=dict(opts.observer_options),
        io_dtype=opts.io_dtype,
        weight_rounding=opts.weight_rounding,
        bias_correction=opts.bias_correction,
        equalize=opts.equalize,
    )
    kept: list[dict[str, np.ndarray]] = []
    data = None
    if calibration is not None:
        data = _keep_some(calibration, artifact.contract, kept, opts.verify_samples)
    return quantize(artifact, config, data), kept


def _keep_some(calibration: Iterable[Any], contract: IOContract, kept: list, n: int):
    """Stream calibration samples through, keeping the first `n` for verification.

    Those `n` are held out (not calibrated on) when there are more than 2n samples: ranges
    fitted to the very data that verifies them hide the clipping that new data meets. With
    2n samples or fewer, all of them calibrate and verification reuses the first `n`.
    """
    head: list[Any] = []
    held_out = False
    for index, sample in enumerate(load_calibration(calibration, contract)):
        feeds = sample_feeds(sample, contract, index)  # checked here: CalibrationError
        if index < n:
            kept.append(feeds)
        if index < 2 * n:
            head.append(sample)
            continue
        if not held_out:
            log.info("calibration: the first %d samples are held out for verification", n)
            held_out = True
            yield from head[n:]
        yield sample
    if not held_out:  # 2n samples or fewer: calibrate on all of them
        if head:
            log.warning(
                "only %d calibration samples: verification reuses %d of them, which hides "
                "clipping that new data meets; give more than %d for held-out verification",
                len(head),
                len(kept),
                2 * n,
            )
        yield from head


def _first_samples(calibration: Any, contract: IOContract, n: int) -> list[dict[str, np.ndarray]]:
    """The first `n` samples of `calibration` as checked feeds."""
    feeds: list[dict[str, np.ndarray]] = []
    for index, sample in enumerate(load_calibration(calibration, contract)):
        if index >= n:
            break
        feeds.append(sample_feeds(sample, contract, index))
    return feeds


def _lower(artifact: OnnxArtifact, mode: str, opts: ConvertOptions) -> TfliteArtifact:
    """Lower in `mode`; integer I/O (`io_dtype`) travels in the QDQ artifact's facts."""
    return lower(artifact, mode=MODES.get(mode).lowering, nhwc=opts.nhwc_inputs)


def _feeds(
    example_inputs: Sequence[object],
    built: _Built,
    calib_samples: list[dict[str, np.ndarray]],
    opts: ConvertOptions,
) -> list[dict[str, np.ndarray]]:
    """The inputs every runtime is compared on (kept calibration samples, else seeded random)."""
    return verification_feeds(
        example_inputs,
        built.optimised.contract,
        calib_samples,
        samples=opts.verify_samples,
        seed=opts.seed,
    )


def _batched(gate: GateResult) -> dict[str, Any]:
    """The report's "dynamic_batch" entry, when the gate also checked a larger batch."""
    if gate.batched is None:
        return {}
    return {"dynamic_batch": {"batch": CHECK_BATCH, "parity": gate.batched["pairs"]}}


def _report(*, mode, opts, fingerprint, built, verdict, timings):
    exported, optimised, qdq, lowered = built
    lowering = dict(lowered.facts)
    report: dict[str, Any] = {
        "bridge_version": VERSION,
        "fingerprint": fingerprint,
        "model": opts.model_name,
        "mode": mode,
        "layout": "NHWC" if lowered.contract.nhwc else "NCHW",
        "contract": optimised.contract.to_dict(),
        "tflite_contract": lowered.contract.to_dict(),
        "sizes": {
            "onnx_bytes": len(exported.serialized()),
            "tflite_bytes": lowered.size_bytes,
        },
        "seconds": timings,
        "passes": optimised.facts.get("passes", []),
        "lowering": lowering,
        "parity": verdict["pairs"],
        "passed": verdict["passed"],
        "failures": verdict["failures"],
    }
    if qdq is not None:
        q = qdq.facts.get("quantization", {})
        report["quantization"] = {k: v for k, v in q.items() if k != "tensors"}
        report["quantization"]["tensors"] = q.get("tensors", {})
    return report


def _write(out: Path, *, overwrite, report, built, gate, feeds):
    """Stage every file beside `out`, then swap the folder in (re-checked under its lock).

    The QDQ model is written only when the gate ran it: only verified files are written.
    """
    exported, optimised, qdq, lowered = built
    qdq = qdq if "qdq" in gate.runtimes else None
    reference = gate.results["torch"]

    def write(tmp: Path) -> list[str]:
        models = [(FILES["onnx"], exported), (FILES["opt"], optimised), (FILES["qdq"], qdq)]
        names = []
        for name, artifact in models:
            if artifact is not None:
                onnx.save(artifact.model, tmp / name)
                names.append(name)
        (tmp / FILES["tflite"]).write_bytes(lowered.data)
        return [*names, FILES["tflite"]]

    arrays = {f"input/{i}/{k}": v for i, f in enumerate(feeds) for k, v in f.items()}
    arrays.update({f"torch/{k}": v for k, v in reference.items()})
    placed = commit_folder(out, report, write=write, samples=arrays, overwrite=overwrite)
    return Conversion(
        tflite_path=placed[FILES["tflite"]],
        onnx_path=placed[FILES["opt"]],
        report=report,
        qdq_path=placed.get(FILES["qdq"]),
        output_dir=out,
    )
