"""The data-driven steps around calibration: equalize before it, correct biases after it.

Both need a few calibration samples twice (once for their own statistics, once more when the
stream is calibrated on), so the first `QuantConfig.correction_samples` are kept in memory and
put back in front of the stream.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bridge.artifact import OnnxArtifact
from bridge.quantize.bias_correction import correct_biases
from bridge.quantize.calibrate import sample_feeds
from bridge.quantize.config import QuantConfig
from bridge.quantize.equalize import equalize_artifact

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """What `prepare` hands to calibration and to `finish`.

    Attributes:
        artifact: the float artifact to calibrate and quantize (equalized when asked).
        calibration: the full calibration stream (the kept samples first).
        samples: the kept samples as feeds (graph input name → array).
        factors: equalized tensor → per-channel factors t_c (the model holds x_c / t_c).
    """

    artifact: OnnxArtifact
    calibration: Iterable[Any]
    samples: list[dict[str, np.ndarray]] = field(default_factory=list)
    factors: dict[str, list[float]] = field(default_factory=dict)


def prepare(artifact: OnnxArtifact, calibration: Iterable[Any], config: QuantConfig) -> Prepared:
    """Keep the first samples and, with `config.equalize`, equalize the model's channel groups."""
    if not (config.bias_correction or config.equalize) or config.activation_dtype is None:
        return Prepared(artifact, calibration)
    limit = min(config.correction_samples, config.num_samples or config.correction_samples)
    stream: Iterator[Any] = iter(calibration)
    head = list(itertools.islice(stream, limit))
    samples = [sample_feeds(s, artifact.contract, i) for i, s in enumerate(head)]
    prepared = Prepared(artifact, itertools.chain(head, stream), samples)
    if config.equalize:
        prepared.artifact, prepared.factors = equalize_artifact(artifact, samples)
    return prepared


def finish(result: OnnxArtifact, prepared: Prepared, config: QuantConfig) -> OnnxArtifact:
    """With `config.bias_correction`, correct the QDQ model's biases; record the equalization."""
    if config.bias_correction and prepared.samples:
        result = correct_biases(result, prepared.artifact.model, prepared.samples)
    if prepared.factors:
        facts = dict(result.facts["quantization"])
        facts["equalization"] = prepared.factors
        result = result.evolve(facts={"quantization": facts})
    return result
