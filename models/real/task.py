"""What every real-model loader returns: the model, its example inputs and its data."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from bridge.errors import ConfigError


@dataclass(frozen=True)
class Dataset:
    """Real data for one model, as numpy arrays in the model's own input layout.

    Each split is a tuple with one array per model input, samples along axis 0 (feed sample i
    as `x[i : i + 1]` to a batch-1 model).

    Attributes:
        task: "classify" (top-1 accuracy) or "embed" (cosine to fp32 and a linear probe).
        calibration: inputs for int8 calibration, disjoint from `evaluation`.
        evaluation: inputs the metrics are measured on.
        labels: one label per evaluation sample: a class index, or for photos whose subject
            several classes name (a red apple is only "Granny Smith" in ImageNet), the set of
            accepted indices; -1 (or an empty set) means unlabelled: agreement only.
        class_names: the names of the label indices.
        train: (embed only) inputs whose fp32 embeddings train the linear probe.
        train_labels: (embed only) their labels.
        source: where the data came from, for reports.
    """

    task: str
    calibration: tuple[np.ndarray, ...]
    evaluation: tuple[np.ndarray, ...]
    labels: np.ndarray | Sequence[frozenset[int]]
    class_names: tuple[str, ...]
    train: tuple[np.ndarray, ...] | None = None
    train_labels: np.ndarray | None = None
    source: str = ""

    @property
    def num_eval(self) -> int:
        return len(self.evaluation[0])

    @property
    def num_calibration(self) -> int:
        return len(self.calibration[0])

    def calibration_samples(self) -> list[tuple[np.ndarray, ...]]:
        """The calibration split as batch-1 input tuples, the form bridge.convert() takes."""
        return [tuple(x[i : i + 1] for x in self.calibration) for i in range(self.num_calibration)]


class RealModel(NamedTuple):
    """A real trained model in eval mode, one example input per model input, and its data."""

    model: torch.nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    dataset: Dataset


def split(n: int, *, calibration: int, evaluation: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint random index sets of sizes `calibration` and `evaluation` out of `n`."""
    if calibration + evaluation > n:
        raise ConfigError(f"cannot take {calibration} + {evaluation} samples out of {n}")
    order = np.random.default_rng(seed).permutation(n)
    return order[:calibration], order[calibration : calibration + evaluation]
