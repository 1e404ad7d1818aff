"""A linear probe: multinomial logistic regression on fixed embeddings, fit by L-BFGS.

Deterministic (zero start, full batch): the same embeddings always give the same probe.
The loss is mean cross-entropy + `l2`·‖W‖² (bias not penalised).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

L2 = 1e-3
MAX_ITER = 200


@dataclass(frozen=True)
class LinearProbe:
    """Weights (D, C) and bias (C,) of a fitted probe."""

    weight: np.ndarray
    bias: np.ndarray

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The class index of each row of `x` (N, D)."""
        return np.argmax(np.asarray(x, dtype=np.float64) @ self.weight + self.bias, axis=1)

    def accuracy(self, x: np.ndarray, labels: np.ndarray) -> float:
        """Top-1 accuracy in percent on embeddings `x` with true `labels`."""
        return float(100.0 * np.mean(self.predict(x) == np.asarray(labels)))


def fit_probe(x: np.ndarray, labels: np.ndarray, *, l2: float = L2) -> LinearProbe:
    """Fit a LinearProbe to embeddings `x` (N, D) and integer `labels` (N,)."""
    xs = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    ys = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    classes = int(ys.max()) + 1
    w = torch.zeros(xs.shape[1], classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b], max_iter=MAX_ITER, tolerance_grad=1e-9, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xs @ w + b, ys) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return LinearProbe(w.detach().numpy(), b.detach().numpy())
