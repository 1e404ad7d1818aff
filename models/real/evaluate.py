"""Task accuracy of a real model through bridge.convert(), in torch, ONNX Runtime and LiteRT.

For one model and one mode: convert with the dataset's calibration split, run every evaluation
sample (batch 1) through torch (the float reference), ONNX Runtime (the QDQ ONNX when the mode
wrote one, else the float ONNX) and LiteRT (the .tflite), and score each runtime:
- classify: top-1 accuracy in percent, and agreement with torch's top-1 in percent;
- embed: linear-probe accuracy in percent (the probe is fit on torch's embeddings of the
  training split) and the cosine of each embedding to torch's (mean and minimum).
`drop` is torch's score minus LiteRT's, in points: positive means the .tflite is worse.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.real.probe import LinearProbe, fit_probe
from models.real.task import Dataset, RealModel

log = logging.getLogger(__name__)

# Input and output names per model, for readable reports (everything else is convert's default).
CONVERT_OPTIONS: dict[str, dict[str, Any]] = {
    "digits_mnist": {"input_names": ("image",), "output_names": ("logits",)},
    "digits_opencv": {"input_names": ("image",), "output_names": ("logits",)},
    "fashion_mnist": {"input_names": ("image",), "output_names": ("logits",)},
    "efficientnet_lite0": {"input_names": ("image",), "output_names": ("logits",)},
    "minilm": {"input_names": ("input_ids", "attention_mask"), "output_names": ("embedding",)},
}

Predict = Callable[[tuple[np.ndarray, ...]], np.ndarray]


@dataclass
class Score:
    """One runtime's score: `metric` in percent, plus agreement or cosine against torch."""

    metric: float
    agree: float | None = None
    cos_mean: float | None = None
    cos_min: float | None = None


@dataclass
class Row:
    """One model × mode: the scores of torch, ORT and LiteRT, the drop and the file sizes."""

    model: str
    mode: str
    metric: str
    samples: int
    torch: Score | None = None
    ort: Score | None = None
    tflite: Score | None = None
    ort_file: str = ""
    tflite_mb: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    @property
    def drop(self) -> float | None:
        """torch's metric minus LiteRT's, in points (positive: the .tflite is worse)."""
        if self.torch is None or self.tflite is None:
            return None
        return round(self.torch.metric - self.tflite.metric, 4)

    @property
    def ort_drop(self) -> float | None:
        if self.torch is None or self.ort is None:
            return None
        return round(self.torch.metric - self.ort.metric, 4)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["drop"], d["ort_drop"] = self.drop, self.ort_drop
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Row:
        """The Row that `to_dict` described."""
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        for runtime in ("torch", "ort", "tflite"):
            if kwargs.get(runtime) is not None:
                kwargs[runtime] = Score(**kwargs[runtime])
        return cls(**kwargs)


def run_all(predict: Predict, inputs: Sequence[np.ndarray]) -> np.ndarray:
    """Stack `predict` over every sample of `inputs`, fed one at a time (batch 1)."""
    outs = [predict(tuple(x[i : i + 1] for x in inputs)) for i in range(len(inputs[0]))]
    return np.concatenate([np.asarray(o, dtype=np.float32).reshape(1, -1) for o in outs])


def torch_predict(model: torch.nn.Module) -> Predict:
    """`model`'s first output for one sample, as numpy."""

    def predict(sample: tuple[np.ndarray, ...]) -> np.ndarray:
        with torch.inference_mode():
            out = model(*(torch.from_numpy(np.ascontiguousarray(x)) for x in sample))
        return (out[0] if isinstance(out, tuple | list) else out).numpy()

    return predict


def runner_predict(runner: Any, input_names: Sequence[str]) -> Predict:
    """A bridge runner's first output for one sample fed by the contract's input names."""

    def predict(sample: tuple[np.ndarray, ...]) -> np.ndarray:
        out = runner.run(dict(zip(input_names, sample, strict=True)))
        return next(iter(out.values()))

    return predict


def correct(pred: np.ndarray, labels: np.ndarray | Sequence[frozenset[int]]) -> np.ndarray:
    """Per sample: 1 where the prediction is the label (or in the accepted set), else 0."""
    if isinstance(labels, np.ndarray):
        return (pred == labels).astype(np.float64)
    return np.array([float(int(p) in accepted) for p, accepted in zip(pred, labels, strict=True)])


def score_classify(
    logits: np.ndarray, labels: np.ndarray | Sequence[frozenset[int]], reference: np.ndarray
) -> Score:
    """Top-1 accuracy (%) on the labelled samples and top-1 agreement (%) with `reference`."""
    pred = logits.argmax(1)
    mask = _labelled(labels)
    hits = correct(pred, labels)[mask]
    return Score(
        metric=round(float(100.0 * hits.mean()), 4) if len(hits) else float("nan"),
        agree=round(float(100.0 * np.mean(pred == reference.argmax(1))), 4),
    )


def _labelled(labels: np.ndarray | Sequence[frozenset[int]]) -> np.ndarray:
    if isinstance(labels, np.ndarray):
        return labels >= 0
    return np.array([len(s) > 0 for s in labels])


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of (N, D) arrays."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    norms = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    return np.sum(a64 * b64, axis=1) / np.maximum(norms, 1e-30)


def score_embed(
    emb: np.ndarray, labels: np.ndarray, reference: np.ndarray, probe: LinearProbe
) -> Score:
    """Probe accuracy (%) of embeddings `emb` and their cosine to `reference` (mean, min)."""
    cos = cosines(emb, reference)
    return Score(
        metric=round(probe.accuracy(emb, labels), 4),
        cos_mean=round(float(cos.mean()), 6),
        cos_min=round(float(cos.min()), 6),
    )


class Evaluator:
    """Evaluates one real model in several modes, reusing torch's outputs and the probe.

    Args:
        name: the model's name (a key of models.real.LOADERS).
        real: the loaded model, example inputs and dataset.
        limit: evaluate only the first `limit` evaluation samples.
        cache: a folder where torch's outputs are kept between runs (keyed by the data).
    """

    def __init__(
        self, name: str, real: RealModel, *, limit: int | None = None, cache: Path | None = None
    ) -> None:
        self.name, self.real = name, real
        data = real.dataset
        self.inputs = tuple(x[:limit] for x in data.evaluation)
        self.labels = data.labels[:limit]
        self.samples = len(self.inputs[0])
        self._ort_cache: dict[str, np.ndarray] = {}
        t0 = time.perf_counter()
        self.reference, train_emb = self._torch_outputs(cache)
        self.torch_seconds = round(time.perf_counter() - t0, 2)
        self.probe: LinearProbe | None = None
        if train_emb is not None and data.train_labels is not None:
            self.probe = fit_probe(train_emb, data.train_labels)

    def _torch_outputs(self, cache: Path | None) -> tuple[np.ndarray, np.ndarray | None]:
        """torch's outputs on the evaluation inputs (batch 1) and, for embed tasks, on the
        probe's training inputs (batched): from `cache` when it holds them."""
        data = self.real.dataset
        digest = hashlib.sha256()
        for x in (*self.inputs, *(data.train or ())):
            digest.update(np.ascontiguousarray(x).tobytes())
        path = cache / f"{self.name}-{digest.hexdigest()[:16]}.npz" if cache else None
        if path is not None and path.exists():
            with np.load(path) as z:
                return z["reference"], z.get("train")
        reference = run_all(torch_predict(self.real.model), self.inputs)
        train = _train_embeddings(self.real.model, data) if data.task == "embed" else None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            arrays = {"reference": reference} | ({"train": train} if train is not None else {})
            tmp = path.with_suffix(f".{os.getpid()}.npz")
            np.savez(tmp, **arrays)
            tmp.replace(path)  # whole or absent, for a concurrent reader
        return reference, train

    def score(self, outputs: np.ndarray) -> Score:
        """Score a runtime's stacked outputs on this model's task."""
        if self.probe is not None:
            return score_embed(outputs, np.asarray(self.labels), self.reference, self.probe)
        return score_classify(outputs, self.labels, self.reference)

    def evaluate(self, mode: str, out_dir: Path, **options: Any) -> Row:
        """Convert in `mode` into `out_dir`, then score torch, ORT and LiteRT. Never raises
        a BridgeError: a failed conversion comes back as a Row with `error` set."""
        import bridge
        from bridge.errors import BridgeError

        data = self.real.dataset
        row = Row(self.name, mode, "probe_top1" if self.probe else "top1", samples=self.samples)
        row.torch = self.score(self.reference)
        row.seconds["torch"] = self.torch_seconds
        kwargs = {**CONVERT_OPTIONS.get(self.name, {}), **options}
        t0 = time.perf_counter()
        try:
            conversion = bridge.convert(
                self.real.model,
                self.real.example_inputs,
                out_dir,
                quantize=None if mode == "fp32" else mode,
                calibration=data.calibration_samples(),  # other modes verify on it
                overwrite=True,
                model_name=self.name,
                **kwargs,
            )
        except BridgeError as e:
            row.error = f"{type(e).__name__}: {e}"
            log.error("%s %s: conversion failed: %s", self.name, mode, row.error)
            return row
        row.seconds["convert"] = round(time.perf_counter() - t0, 2)
        row.tflite_mb = round(conversion.tflite_path.stat().st_size / 1e6, 3)
        ort_path = conversion.qdq_path or conversion.onnx_path
        row.ort_file = ort_path.name
        t0 = time.perf_counter()
        row.ort = self.score(self._ort_outputs(ort_path, conversion.report))
        row.seconds["ort"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        row.tflite = self.score(self._tflite_outputs(conversion))
        row.seconds["tflite"] = round(time.perf_counter() - t0, 2)
        return row

    def _ort_outputs(self, path: Path, report: dict[str, Any]) -> np.ndarray:
        import onnx

        from bridge.contract import IOContract
        from bridge.runtime.runners import OrtRunner

        key = hashlib.sha256(path.read_bytes()).hexdigest()
        if key not in self._ort_cache:
            contract = IOContract.from_dict(report["contract"])
            runner = OrtRunner(onnx.load(path), contract)
            predict = runner_predict(runner, contract.input_names)
            self._ort_cache[key] = run_all(predict, self.inputs)
        return self._ort_cache[key]

    def _tflite_outputs(self, conversion: Any) -> np.ndarray:
        from bridge.contract import IOContract
        from bridge.runtime.runners import LiteRTRunner

        user = IOContract.from_dict(conversion.report["contract"])
        lowered = IOContract.from_dict(conversion.report["tflite_contract"])
        runner = LiteRTRunner(conversion.tflite_path, lowered, user_contract=user)
        return run_all(runner_predict(runner, user.input_names), self.inputs)


def _train_embeddings(model: torch.nn.Module, data: Dataset) -> np.ndarray:
    """torch's embeddings of the probe's training split, in batches of 64."""
    if data.train is None or data.train_labels is None:
        raise ValueError("an embed dataset needs a training split for its probe")
    with torch.inference_mode():
        return torch.cat(
            [
                model(*(torch.from_numpy(x[i : i + 64]) for x in data.train))
                for i in range(0, len(data.train[0]), 64)
            ]
        ).numpy()
