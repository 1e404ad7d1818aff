"""Which op of a .tflite makes LiteRT crash: bisection over copies truncated after op k.

The copy truncated after op k keeps the main subgraph's first k + 1 operators and makes op k's
outputs the graph outputs; its inputs and tensors are the original's, so the same feeds fit.
If the copy ending at the last op crashes, the first k whose copy crashes is the crash site
(found in about log2(ops) runs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from bridge.errors import ModelLoadError
from bridge.runtime import tflite_io


@dataclass(frozen=True)
class CrashSite:
    """The first op whose inclusion crashes LiteRT: its index, builtin type and first output's
    name (None for an op without outputs)."""

    op_index: int
    op_type: str
    tensor: str | None


def truncated(model: Any, k: int) -> bytes:
    """`model` (a parsed `ModelT`, left unchanged) cut after op k of its main subgraph."""
    sg = model.subgraphs[0]
    ops, outputs, signatures = sg.operators, sg.outputs, model.signatureDefs
    try:
        sg.operators = ops[: k + 1]
        sg.outputs = np.asarray([t for t in ops[k].outputs if t >= 0], dtype=np.int32)
        model.signatureDefs = None  # they name the original outputs
        return tflite_io.save(model)
    finally:
        sg.operators, sg.outputs, model.signatureDefs = ops, outputs, signatures


def locate(data: bytes, crashes: Callable[[bytes], bool]) -> CrashSite | None:
    """The first op k whose truncated copy `crashes`; None if the file cannot be parsed or
    even the copy ending at the last op runs (the crash needs the whole graph)."""
    try:
        model = tflite_io.load(data)
    except ModelLoadError:
        return None
    n = len(model.subgraphs[0].operators or [])
    if n == 0 or not crashes(truncated(model, n - 1)):
        return None
    lo, hi = 0, n - 1  # the copy ending at op hi crashes
    while lo < hi:
        mid = (lo + hi) // 2
        if crashes(truncated(model, mid)):
            hi = mid
        else:
            lo = mid + 1
    return site(model, hi)


def site(model: Any, k: int) -> CrashSite:
    """Op k's index, builtin type and first output tensor's name."""
    sg = model.subgraphs[0]
    op = sg.operators[k]
    outs = [int(t) for t in op.outputs if t >= 0]
    name = tflite_io.tensor_name(sg.tensors[outs[0]]) if outs else None
    return CrashSite(k, tflite_io.op_name(model, op), name)
