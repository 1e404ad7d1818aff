"""Re-verify a conversion folder from its files alone: ORT, QDQ ORT and LiteRT against the
torch reference outputs stored beside them."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from bridge.contract import IOContract
from bridge.errors import ModelLoadError
from bridge.modes import MODES
from bridge.outdir import FILES
from bridge.runtime import tflite_io
from bridge.runtime.runners import LiteRTRunner, OrtRunner
from bridge.verify import noise, parity


@dataclass(frozen=True)
class StoredConversion:
    """What a conversion folder holds, loaded and checked."""

    root: Path
    report: dict[str, Any]
    contract: IOContract
    tflite_contract: IOContract
    mode: str
    feeds: list[dict[str, np.ndarray]]
    reference: dict[str, np.ndarray]


def load_folder(path: str | Path) -> StoredConversion:
    """Read report.json and verify.npz of a conversion folder (ModelLoadError if unusable)."""
    root = Path(path)
    if root.exists() and not root.is_dir():
        raise ModelLoadError(f"{root} is not a folder; give the output folder of bridge convert")
    report = _load_json(root / FILES["report"])
    try:
        contract = IOContract.from_dict(report["contract"])
        tflite_contract = IOContract.from_dict(report["tflite_contract"])
        mode = report["mode"]
    except (KeyError, TypeError) as e:
        raise ModelLoadError(f"{root / FILES['report']} is not a bridge report: missing {e}") from e
    feeds, reference = _load_samples(root / FILES["samples"], contract)
    return StoredConversion(root, report, contract, tflite_contract, mode, feeds, reference)


def output_scales(tensors: Mapping[str, Any], outputs: Sequence[str]) -> dict[str, float]:
    """The quantization step of each quantized output, from the QDQ facts' tensor entries."""
    return {
        out: float(np.ravel(tensors[out]["scale"])[0])
        for out in outputs
        if tensors.get(out, {}).get("scale")
    }


def verify_dir(path: str | Path) -> dict[str, Any]:
    """Re-run the parity check of a conversion folder; returns the report with fresh parity."""
    stored = load_folder(path)
    root, report, contract, mode = stored.root, stored.report, stored.contract, stored.mode
    runners: dict[str, Any] = {"ort": OrtRunner(_load_onnx(root / FILES["opt"]), contract)}
    qdq = None
    if (root / FILES["qdq"]).exists() and mode in MODES and MODES.get(mode).integer:
        qdq = _load_onnx(root / FILES["qdq"])
        runners["qdq"] = OrtRunner(qdq, contract)
    tflite = _load_tflite(root / FILES["tflite"])
    runners["tflite"] = LiteRTRunner(tflite, stored.tflite_contract, user_contract=contract)
    samples = parity.run_all(runners, stored.feeds)
    samples["torch"] = parity.split(stored.reference, samples["ort"])
    tensors = report.get("quantization", {}).get("tensors", {})
    verdict = parity.check(
        samples,
        mode=mode,
        output_names=contract.output_names,
        lsb_scales=output_scales(tensors, contract.output_names),
        predicted=None
        if qdq is None
        else noise.predict(qdq, contract, stored.feeds, samples["torch"]),
    )
    return {
        **report,
        "parity": verdict["pairs"],
        "passed": verdict["passed"],
        "failures": verdict["failures"],
    }


def _load_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelLoadError(f"{path} not found; is this a bridge output folder?") from None
    except ValueError as e:
        raise ModelLoadError(f"{path} is corrupt: {e}") from e


def _load_onnx(path: Path) -> onnx.ModelProto:
    try:
        return onnx.load(path)
    except FileNotFoundError:
        raise ModelLoadError(f"{path} not found; convert again") from None
    except Exception as e:  # protobuf raises DecodeError and friends
        raise ModelLoadError(f"{path} is not a readable ONNX model: {e}") from e


def _load_samples(path: Path, contract: IOContract):
    try:
        with np.load(path) as data:
            n = 1 + max(int(k.split("/")[1]) for k in data.files if k.startswith("input/"))
            feeds = [
                {s.name: data[f"input/{i}/{s.name}"] for s in contract.inputs} for i in range(n)
            ]
            reference = {s.name: data[f"torch/{s.name}"] for s in contract.outputs}
    except FileNotFoundError:
        raise ModelLoadError(f"{path} not found; convert again to record inputs") from None
    except Exception as e:  # zipfile, pickle and key errors: arrays are read lazily
        raise ModelLoadError(f"{path} is corrupt ({type(e).__name__}: {e}); convert again") from e
    return feeds, reference


def _load_tflite(path: Path) -> bytes:
    """The .tflite bytes, checked structurally first: LiteRT trusts its input and can crash
    the process (segmentation fault) on a truncated or corrupted flatbuffer."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelLoadError(f"{path} is missing; convert again") from None
    try:
        model = tflite_io.load(data)
        tflite_io.check_indices(model)
    except ModelLoadError as e:
        raise ModelLoadError(f"{path} is not a usable .tflite: {e}; convert again") from e
    return data
