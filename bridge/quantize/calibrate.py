"""Calibration: run ONNX Runtime on the float graph and feed every activation to its observer.

Samples stream one at a time (an iterator is consumed lazily, never listed), so memory depends
on the model and the observers, not on the number of samples (besides the at most
2·`crossfit.FOLD_SAMPLES` samples the cross-fit check keeps: see `bridge.quantize.crossfit`).
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from bridge.artifact import OnnxArtifact
from bridge.contract import IOContract, TensorSpec
from bridge.errors import BridgeError, CalibrationError, ConfigError, ShapeError
from bridge.quantize.config import QuantConfig
from bridge.quantize.crossfit import CrossFit
from bridge.quantize.gptq import InputMoments
from bridge.quantize.input_ranges import InputRanges
from bridge.quantize.observers import Observer
from bridge.quantize.plan import build_plan
from bridge.quantize.tails import OutputEnergy
from bridge.runtime.runners import OrtRunner

log = logging.getLogger(__name__)

Sample = tuple[np.ndarray, ...] | Sequence[np.ndarray] | Mapping[str, np.ndarray] | np.ndarray

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def calibrate(
    artifact: OnnxArtifact,
    data: Iterable[Sample],
    config: QuantConfig,
    *,
    moments: InputMoments | None = None,
    crossfit: bool = True,
) -> dict[str, Observer]:
    """Observe every activation the plan quantizes over the calibration samples.

    Args:
        artifact: the optimised float model.
        data: samples, each a tuple of arrays in contract order or a {input name: array} map.
        config: the quantization config (observer choice, `num_samples`).
        moments: also accumulates the weights' input moments (for GPTQ rounding) when given.
        crossfit: check that ranges from half of the samples hold on the other half
            (`bridge.quantize.crossfit`; needs 32 samples or more).

    Returns:
        tensor name → observer, for the tensors that received float data. Observers that leave
        the tail extension to calibration get it when the outputs are concentrated across
        samples (`bridge.quantize.tails.OutputEnergy`).

    Raises:
        CalibrationError: no samples, or a sample with a wrong shape, dtype or non-finite values
            (the message names the sample index and the input), a float input with no range
            (`bridge.quantize.input_ranges`), or the cross-fit check failed.
    """
    if config.activation_dtype is None:
        raise ConfigError(f"mode {config.mode!r} needs no calibration")
    contract = artifact.contract
    plan = build_plan(artifact.model, config)
    stats = _Statistics.start(contract, plan.activations, config, moments, crossfit=crossfit)
    runner = _runner(artifact, stats)
    samples = itertools.islice(data, config.num_samples)
    count = 0
    for index, sample in enumerate(_progress(samples, data, config.num_samples)):
        feeds = sample_feeds(sample, contract, index)
        stats.ranges.update(feeds)
        stats.add(index, feeds, _run(runner, feeds, index))
        count += 1
    if count == 0:
        raise CalibrationError(
            "calibration data is empty; pass at least one sample per input "
            f"{contract.input_names} (a list of tuples, a .npy, a .npz or an image folder)"
        )
    stats.ranges.check(artifact.model)
    _warn_nonfinite(stats.observers)
    log.info("calibrated %d activation tensors on %d samples", len(stats.observers), count)
    stats.choose_tails(artifact, config)
    return {t: o for t, o in stats.observers.items() if o.count > 0}


@dataclass
class _Statistics:
    """What calibration accumulates over the samples: activation observers, the weights' input
    moments, the cross-fit folds, the outputs' energy and the inputs' ranges."""

    observers: dict[str, Observer]
    moments: InputMoments | None
    folds: CrossFit | None
    energy: OutputEnergy
    ranges: InputRanges
    float_outputs: list[str]

    @classmethod
    def start(
        cls,
        contract: IOContract,
        activations: Iterable[str],
        config: QuantConfig,
        moments: InputMoments | None,
        *,
        crossfit: bool,
    ) -> _Statistics:
        observers = {t: config.make_observer(t) for t in activations}
        folds = None
        if crossfit:
            folds = CrossFit(
                lambda: {t: config.make_observer(t) for t in observers}, contract.output_names
            )
        float_outputs = [o.name for o in contract.outputs if np.dtype(o.dtype).kind == "f"]
        return cls(observers, moments, folds, OutputEnergy(), InputRanges(contract), float_outputs)

    def add(self, index: int, feeds: dict[str, np.ndarray], values: dict[str, Any]) -> None:
        """Fold one sample's feeds and ONNX Runtime values into every statistic."""
        values.update(feeds)
        for name, obs in self.observers.items():
            value = values.get(name)
            if value is not None and np.asarray(value).dtype.kind == "f":
                obs.update(value)
        if self.moments is not None:
            self.moments.update(values)
        self.energy.update({o: values[o] for o in self.float_outputs if o in values})
        if self.folds is not None:
            self.folds.add(index, feeds, values)

    def choose_tails(self, artifact: OnnxArtifact, config: QuantConfig) -> None:
        """Give the observers (and the folds, then checked) the outputs' tail horizon."""
        horizon = self.energy.horizon()
        log.info(
            "outputs' energy concentration %.1f: tail horizon %g",
            self.energy.concentration(),
            horizon,
        )
        for obs in self.observers.values():
            obs.choose_tail(horizon)
        if self.folds is not None:
            self.folds.choose_tail(horizon)
            self.folds.check(artifact, config)


def _runner(artifact: OnnxArtifact, stats: _Statistics) -> OrtRunner:
    """ONNX Runtime on the float model, also returning every tensor `stats` observes."""
    inputs = set(artifact.contract.input_names)
    moments = stats.moments
    wanted = [*stats.observers, *(moments.sources if moments is not None else ())]
    return OrtRunner(
        artifact.model,
        artifact.contract,
        extra_outputs=[t for t in dict.fromkeys(wanted) if t not in inputs],
    )


def _run(runner: OrtRunner, feeds: dict[str, np.ndarray], index: int) -> dict[str, Any]:
    try:
        return runner.run(feeds)
    except BridgeError:
        raise
    except Exception as e:  # onnxruntime raises untyped errors
        raise CalibrationError(f"ONNX Runtime failed on calibration sample {index}: {e}") from e


def _progress(samples: Iterable, data: Iterable, limit: int | None) -> Iterable:
    """Wrap in a tqdm bar when stderr is a terminal and INFO messages are shown."""
    if not sys.stderr.isatty() or not log.isEnabledFor(logging.INFO):
        return samples
    total = len(data) if hasattr(data, "__len__") else None  # type: ignore[arg-type]
    if total is not None and limit is not None:
        total = min(total, limit)
    return tqdm(samples, total=total, desc="calibrating", unit="sample", leave=False)


def _warn_nonfinite(observers: Mapping[str, Observer]) -> None:
    for name, obs in observers.items():
        if obs.nonfinite:
            log.warning("activation %r had %d non-finite values; skipped", name, obs.nonfinite)


def sample_feeds(sample: Sample, contract: IOContract, index: int) -> dict[str, np.ndarray]:
    """One sample as {input name: array}, checked against the contract.

    Raises:
        CalibrationError: naming `index` and the input, for a wrong count, shape, dtype or
            non-finite values.
    """
    names = contract.input_names
    if isinstance(sample, Mapping):
        feeds = {k: _numpy(v) for k, v in sample.items()}
    else:
        arrays = (sample,) if _is_array(sample) else tuple(sample)
        if len(arrays) != len(names):
            raise CalibrationError(
                f"calibration sample {index} has {len(arrays)} arrays; the model has "
                f"{len(names)} inputs {names}; give one array per input, in that order"
            )
        feeds = {n: _numpy(a) for n, a in zip(names, arrays, strict=True)}
    try:
        contract.check_feeds(feeds)
    except ShapeError as e:
        raise CalibrationError(f"calibration sample {index}: {e}") from e
    for name, value in feeds.items():
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            bad = int(value.size - np.isfinite(value).sum())
            raise CalibrationError(
                f"calibration sample {index}, input {name!r}: {bad} NaN/Inf values; "
                "remove or clean the sample"
            )
    return feeds


def load_calibration(
    source: str | os.PathLike | Iterable[Sample],
    contract: IOContract,
    *,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
) -> Iterator[tuple[np.ndarray, ...]]:
    """Calibration samples as tuples of arrays in contract order, read lazily.

    Args:
        source: an iterable of samples (tuples or {name: array} maps); a .npy file (one input;
            the first axis counts samples); a .npz file (one array per input name, first axis
            samples); or a folder of images (one 4-D image input).
        contract: the model's I/O contract (names, shapes and dtypes of the inputs).
        mean: per-channel (or scalar) mean subtracted from images scaled to [0, 1].
        std: per-channel (or scalar) standard deviation images are divided by.

    Raises:
        CalibrationError: for an unreadable source or one that does not fit the contract.
    """
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if path.is_dir():
            return _image_samples(path, contract, mean, std)
        if not path.exists():
            raise CalibrationError(f"calibration data {str(path)!r} does not exist")
        if path.suffix == ".npy":
            return _npy_samples(path, contract)
        if path.suffix == ".npz":
            return _npz_samples(path, contract)
        raise CalibrationError(
            f"calibration data {str(path)!r}: use a .npy, a .npz or a folder of images"
        )
    if isinstance(source, np.ndarray | Mapping) or not isinstance(source, Iterable):
        raise CalibrationError(
            f"calibration data of type {type(source).__name__} is not supported; pass an "
            "iterable of samples (tuples of arrays), a .npy/.npz path or an image folder"
        )
    return (_as_tuple(s, contract, i) for i, s in enumerate(source))


def _as_tuple(sample: Sample, contract: IOContract, index: int) -> tuple[np.ndarray, ...]:
    if isinstance(sample, Mapping):
        missing = [n for n in contract.input_names if n not in sample]
        if missing:
            raise CalibrationError(f"calibration sample {index} lacks inputs {missing}")
        return tuple(_numpy(sample[n]) for n in contract.input_names)
    if _is_array(sample):
        return (_numpy(sample),)
    return tuple(_numpy(a) for a in sample)


def _is_array(x: object) -> bool:
    """A single array (numpy or torch), as opposed to a tuple or list of them."""
    return not isinstance(x, tuple | list) and hasattr(x, "__array__")


def _numpy(x: object) -> np.ndarray:
    """numpy view of an array or a torch tensor (detached, on the CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()  # type: ignore[attr-defined]
    return np.asarray(x)


def _split(array: np.ndarray, spec: TensorSpec, where: str) -> list[np.ndarray] | range:
    """Check `array` stacks samples of `spec` along axis 0; return the chunk starts."""
    batch = spec.shape[0] if spec.rank and spec.shape[0] is not None else 1
    if array.ndim not in (spec.rank, spec.rank + 1):
        raise CalibrationError(
            f"{where}: array of shape {array.shape} does not stack samples of input "
            f"{spec.name!r} with shape {spec.shape}; put samples along the first axis"
        )
    return range(0, array.shape[0] - (batch if array.ndim == spec.rank else 1) + 1, batch)


def _chunk(array: np.ndarray, spec: TensorSpec, start: int) -> np.ndarray:
    if array.ndim == spec.rank + 1:
        x = np.asarray(array[start])
    else:
        batch = spec.shape[0] if spec.shape[0] is not None else 1
        x = np.asarray(array[start : start + batch])
    if x.dtype.kind == "f" and np.dtype(spec.dtype).kind == "f":
        x = x.astype(spec.dtype, copy=False)
    return x


def _single_input(contract: IOContract, what: str) -> TensorSpec:
    if len(contract.inputs) != 1:
        raise CalibrationError(
            f"{what} holds one input but the model has {contract.input_names}; "
            "use a .npz with one array per input name"
        )
    return contract.inputs[0]


def _npy_samples(path: Path, contract: IOContract) -> Iterator[tuple[np.ndarray, ...]]:
    spec = _single_input(contract, f"{path.name}")
    array = _load_array(path, mmap_mode="r")
    starts = _split(array, spec, str(path))
    return ((_chunk(array, spec, s),) for s in starts)


def _load_array(path: Path, **kwargs: Any) -> Any:
    """np.load, with a CalibrationError for a file that is not a readable .npy/.npz."""
    try:
        return np.load(path, **kwargs)
    except (ValueError, OSError, EOFError) as e:
        raise CalibrationError(
            f"{path} is not a readable NumPy file ({e}); save calibration arrays with "
            "np.save (.npy) or np.savez (.npz, one array per input name)"
        ) from e


def _npz_samples(path: Path, contract: IOContract) -> Iterator[tuple[np.ndarray, ...]]:
    with _load_array(path) as npz:
        keys = set(npz.files)
        missing = [n for n in contract.input_names if n not in keys]
        if missing:
            raise CalibrationError(
                f"{path}: no array for inputs {missing}; it has {sorted(keys)}; "
                f"name the arrays {contract.input_names}"
            )
        counts = {s.name: len(_split(npz[s.name], s, f"{path}[{s.name}]")) for s in contract.inputs}
    if len(set(counts.values())) != 1:
        raise CalibrationError(f"{path}: inputs hold different numbers of samples: {counts}")

    def samples() -> Iterator[tuple[np.ndarray, ...]]:
        with np.load(path) as npz:
            arrays = [npz[s.name] for s in contract.inputs]
            starts = [_split(a, s, str(path)) for a, s in zip(arrays, contract.inputs, strict=True)]
            for chunk in zip(*starts, strict=True):
                yield tuple(
                    _chunk(a, s, k) for a, s, k in zip(arrays, contract.inputs, chunk, strict=True)
                )

    return samples()


def _image_samples(
    folder: Path,
    contract: IOContract,
    mean: float | Sequence[float] | None,
    std: float | Sequence[float] | None,
) -> Iterator[tuple[np.ndarray, ...]]:
    spec = _single_input(contract, f"the image folder {folder}")
    if spec.rank != 4:
        raise CalibrationError(
            f"image folder {folder}: input {spec.name!r} has shape {spec.shape}; "
            "images need a 4-D input"
        )
    channels_last = spec.layout == "NHWC"
    c, h, w = (spec.shape[3], *spec.shape[1:3]) if channels_last else spec.shape[1:]
    if c not in (1, 3):
        raise CalibrationError(
            f"image folder {folder}: input {spec.name!r} has {c} channels; images give 1 or 3"
        )
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CalibrationError(
            f"image folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})"
        )
    m = np.asarray(0.0 if mean is None else mean, np.float32).reshape(-1)
    s = np.asarray(1.0 if std is None else std, np.float32).reshape(-1)
    for what, v in (("mean", m), ("std", s)):
        if v.size not in (1, c):
            raise CalibrationError(f"{what} has {v.size} values; the input has {c} channels")

    def samples() -> Iterator[tuple[np.ndarray, ...]]:
        from PIL import Image

        for f in files:
            try:
                with Image.open(f) as img:
                    img = img.convert("RGB" if c == 3 else "L")
                    if h is not None and w is not None:
                        img = img.resize((w, h), Image.Resampling.BILINEAR)
                    x = np.asarray(img, np.float32).reshape(img.height, img.width, c) / 255.0
            except OSError as e:
                raise CalibrationError(f"cannot read image {f}: {e}") from e
            x = (x - m) / s
            x = x if channels_last else x.transpose(2, 0, 1)
            yield (np.ascontiguousarray(x[None], dtype=spec.dtype),)

    return samples()
