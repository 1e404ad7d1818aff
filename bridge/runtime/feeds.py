"""Deterministic input data for a contract."""

from __future__ import annotations

import numpy as np

from bridge.contract import IOContract


def random_feeds(contract: IOContract, *, seed: int = 0, batch: int = 1) -> dict[str, np.ndarray]:
    """Standard-normal float inputs (small non-negative ints for integer inputs), seeded."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for spec in contract.inputs:
        shape = spec.concrete_shape(batch)
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            feeds[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[spec.name] = rng.integers(0, 2, shape).astype(dtype)
        else:
            feeds[spec.name] = rng.integers(0, 10, shape).astype(dtype)
    return feeds
