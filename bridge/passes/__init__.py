"""ONNX → ONNX graph passes and the manager that runs them.

Each pass lives in its own module and is a callable `ModelProto -> PassResult`. `PASSES` maps
names to passes; `DEFAULT_PASSES` is the order `run_passes` uses: freeze (shapes, constants,
no-ops, dead code), fuse (BN, MatMul+Add, activations, zero Pad into Conv), work around what
onnx2tf would lower wrongly (a Relu between constant scales, PRelu, 4-D channel Concat), then
clean up and re-infer shapes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import onnx

from bridge.artifact import OnnxArtifact
from bridge.errors import PassError
from bridge.passes.base import GraphPass, PassResult
from bridge.passes.check import OutputGuard, check_contract, check_structure, io_signature
from bridge.passes.decompose_prelu import decompose_prelu
from bridge.passes.eliminate_dead_code import eliminate_dead_code
from bridge.passes.flatten_channel_concat import flatten_channel_concat
from bridge.passes.fold_constants import fold_constants
from bridge.passes.fuse_activation import fuse_activation
from bridge.passes.fuse_conv_bn import fuse_conv_bn
from bridge.passes.fuse_matmul_add import fuse_matmul_add
from bridge.passes.fuse_pad_conv import fuse_pad_conv
from bridge.passes.infer_shapes import infer_shapes
from bridge.passes.mul_relu_mul import mul_relu_mul
from bridge.passes.recurrent_last_state import recurrent_last_state
from bridge.passes.remove_identity import remove_identity
from bridge.registry import Registry
from bridge.runtime.metrics import SQNR_EXACT_DB
from bridge.runtime.tolerances import PASS_MIN_SQNR_DB

__all__ = ["DEFAULT_PASSES", "MAX_REPEATS", "PASSES", "GraphPass", "PassResult", "run_passes"]

log = logging.getLogger(__name__)

PASSES: Registry[GraphPass] = Registry("pass")
for _name, _pass in (
    ("infer_shapes", infer_shapes),
    ("fold_constants", fold_constants),
    ("remove_identity", remove_identity),
    ("eliminate_dead_code", eliminate_dead_code),
    ("fuse_conv_bn", fuse_conv_bn),
    ("fuse_matmul_add", fuse_matmul_add),
    ("fuse_activation", fuse_activation),
    ("fuse_pad_conv", fuse_pad_conv),
    ("mul_relu_mul", mul_relu_mul),
    ("decompose_prelu", decompose_prelu),
    ("flatten_channel_concat", flatten_channel_concat),
    ("recurrent_last_state", recurrent_last_state),
):
    PASSES.register(_name)(_pass)

DEFAULT_PASSES: tuple[str, ...] = (
    "infer_shapes",
    "fold_constants",
    "remove_identity",
    "eliminate_dead_code",
    "fuse_conv_bn",
    "fuse_matmul_add",
    "fuse_activation",
    "fuse_pad_conv",
    "mul_relu_mul",
    "decompose_prelu",
    "flatten_channel_concat",
    "recurrent_last_state",
    "eliminate_dead_code",
    "infer_shapes",
)

#: A pass is re-run while it still changes the model, at most this many times in a row.
MAX_REPEATS = 8


def run_passes(
    artifact: OnnxArtifact,
    names: Sequence[str] | None = None,
    *,
    check: bool = True,
    seed: int = 0,
) -> OnnxArtifact:
    """Run the passes `names` (default `DEFAULT_PASSES`) in order, each to its fixed point.

    After every pass that changed the model: the ONNX checker, the graph I/O signature (names,
    order, dtypes and static dims never change) and, with `check`, ONNX Runtime on the same
    seeded feeds before and after; every output must keep `PASS_MIN_SQNR_DB`.

    Returns:
        The artifact at stage "passes" with facts["passes"]: one entry per pass in `names`
        with name, count, max_abs_change and min_sqnr_db (None when unchecked), seconds, repeats,
        nodes (after) and hints.

    Raises:
        ConfigError: an unknown pass name.
        ShapeError: the model's I/O names do not match the contract.
        PassError: a pass broke the model; the message names the pass (and output, SQNR).
    """
    chosen = [(name, PASSES.get(name)) for name in (DEFAULT_PASSES if names is None else names)]
    model = artifact.model
    check_contract(model, artifact.contract)
    signature = io_signature(model)
    guard = None
    if check:
        guard = OutputGuard(model, artifact.contract, seed=seed, min_sqnr_db=PASS_MIN_SQNR_DB)
    entries = []
    for name, graph_pass in chosen:
        model, entry = _to_fixed_point(name, graph_pass, model, signature, guard)
        entries.append(entry)
    return artifact.evolve(model=model, stage="passes", facts={"passes": entries})


def _to_fixed_point(
    name: str,
    graph_pass: GraphPass,
    model: onnx.ModelProto,
    signature: tuple,
    guard: OutputGuard | None,
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Run one pass until it stops changing the model; return the model and its log entry."""
    entry: dict[str, Any] = {
        "name": name,
        "count": 0,
        "max_abs_change": 0.0 if guard else None,
        "min_sqnr_db": SQNR_EXACT_DB if guard else None,
        "seconds": 0.0,
        "repeats": 0,
        "nodes": len(model.graph.node),
        "hints": {},
    }
    for _ in range(MAX_REPEATS):
        start = time.perf_counter()
        result = graph_pass(model)
        entry["seconds"] += time.perf_counter() - start
        entry["repeats"] += 1
        if not isinstance(result, PassResult):
            raise PassError(f"pass {name!r} returned {type(result).__name__}, not a PassResult")
        entry["hints"] = dict(result.hints) or entry["hints"]
        if not result.modified:
            break
        check_structure(name, result.model, signature)
        if guard is not None:
            change = guard.judge(name, result.model)
            entry["max_abs_change"] = max(entry["max_abs_change"], change.max_abs)
            entry["min_sqnr_db"] = min(entry["min_sqnr_db"], change.min_sqnr_db)
        model = result.model
        entry["count"] += result.count
        entry["nodes"] = len(model.graph.node)
    else:
        log.warning("pass %r still changed the model after %d runs; moving on", name, MAX_REPEATS)
    entry["seconds"] = round(entry["seconds"], 6)
    log.info("pass %s: %d rewrites, %d nodes", name, entry["count"], entry["nodes"])
    return model, entry
