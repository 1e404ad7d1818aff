"""What `run_passes` checks after every pass: the ONNX checker, the I/O signature, and
ONNX Runtime outputs on fixed feeds against the outputs before the pass."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from bridge.contract import IOContract
from bridge.errors import PassError, ShapeError
from bridge.runtime.feeds import random_feeds
from bridge.runtime.metrics import SQNR_EXACT_DB, sqnr_db
from bridge.runtime.runners import OrtRunner

#: One graph input or output: (name, element type, dims or None); a dim is an int or None.
Signature = tuple[tuple[str, int, tuple[int | None, ...] | None], ...]


@dataclass(frozen=True)
class Change:
    """How far a pass moved the outputs: the worst output by each measure."""

    max_abs: float
    min_sqnr_db: float


def io_signature(model: onnx.ModelProto) -> tuple[Signature, Signature]:
    """The (inputs, outputs) signature of the model's graph."""
    return _signature(model.graph.input), _signature(model.graph.output)


def check_contract(model: onnx.ModelProto, contract: IOContract) -> None:
    """Raise ShapeError unless the model's graph I/O names are the contract's, in order."""
    inits = {t.name for t in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in inits]
    outputs = [o.name for o in model.graph.output]
    if inputs != contract.input_names or outputs != contract.output_names:
        raise ShapeError(
            f"run_passes: the model's inputs {inputs} and outputs {outputs} do not match the "
            f"contract's {contract.input_names} and {contract.output_names}; build the artifact "
            "from the exported model and its own contract"
        )


def check_structure(name: str, model: onnx.ModelProto, signature: tuple) -> None:
    """Raise PassError if pass `name` left an invalid model or changed the graph's I/O."""
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise PassError(
            f"pass {name!r} produced an invalid ONNX model: {e}; drop it from the pass list"
        ) from e
    for kind, want, got in zip(("input", "output"), signature, io_signature(model), strict=True):
        problem = _signature_change(want, got)
        if problem:
            raise PassError(f"pass {name!r} changed the graph {kind}s: {problem}")


class OutputGuard:
    """ONNX Runtime outputs of the current model on fixed feeds; judges each rewrite.

    Args:
        model: the model before the first pass (the reference).
        contract: its I/O contract (feeds follow it).
        seed: seed of the deterministic feeds.
        min_sqnr_db: the floor every output must keep across one pass.
    """

    def __init__(
        self, model: onnx.ModelProto, contract: IOContract, *, seed: int, min_sqnr_db: float
    ) -> None:
        self.contract = contract
        self.min_sqnr_db = min_sqnr_db
        self.feeds = random_feeds(contract, seed=seed)
        self.reference = OrtRunner(model, contract).run(self.feeds)

    def judge(self, name: str, model: onnx.ModelProto) -> Change:
        """Compare `model`'s outputs with the reference, then make them the new reference.

        Raises:
            PassError: naming the pass, the output and the SQNR, if any output falls below
                the floor or ONNX Runtime cannot run the model.
        """
        try:
            outputs = OrtRunner(model, self.contract).run(self.feeds)
        except Exception as e:  # ONNX Runtime raises its own untyped errors
            raise PassError(
                f"pass {name!r}: ONNX Runtime cannot run the model after it: {e}"
            ) from e
        worst = Change(0.0, SQNR_EXACT_DB)
        for out, ref in self.reference.items():
            new = outputs.get(out)
            change = _change(ref, new)
            if change.min_sqnr_db < self.min_sqnr_db:
                raise PassError(
                    f"pass {name!r} changed output {out!r}: SQNR {change.min_sqnr_db:.1f} dB "
                    f"< {self.min_sqnr_db:.1f} dB (max abs change {change.max_abs:.3g}); the "
                    "rewrite is wrong: drop the pass from the list and report the model"
                )
            worst = Change(
                max(worst.max_abs, change.max_abs), min(worst.min_sqnr_db, change.min_sqnr_db)
            )
        self.reference = outputs
        return worst


def _change(ref: np.ndarray, new: np.ndarray | None) -> Change:
    if new is None or ref.shape != new.shape:
        return Change(float("inf"), -SQNR_EXACT_DB)
    float_like = ref.dtype.kind in "fc"
    if np.array_equal(ref, new, equal_nan=float_like):
        return Change(0.0, SQNR_EXACT_DB)
    if float_like:
        finite = np.isfinite(ref)
        if not np.array_equal(finite, np.isfinite(new)) or not np.array_equal(
            ref[~finite], new[~finite], equal_nan=True
        ):
            return Change(float("inf"), -SQNR_EXACT_DB)
        ref, new = ref[finite], new[finite]
    diff = np.abs(ref.astype(np.float64) - new.astype(np.float64))
    return Change(float(diff.max()), sqnr_db(ref, new))


def _signature(values: object) -> Signature:
    out = []
    for vi in values:  # type: ignore[attr-defined]
        t = vi.type.tensor_type
        dims = None
        if t.HasField("shape"):
            dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
        out.append((vi.name, t.elem_type, dims))
    return tuple(out)


def _signature_change(want: Signature, got: Signature) -> str:
    """'' when `got` keeps `want` (a symbolic dim may become static), else what changed."""
    if [w[0] for w in want] != [g[0] for g in got]:
        return f"names {[w[0] for w in want]} became {[g[0] for g in got]}"
    for (name, wtype, wdims), (_, gtype, gdims) in zip(want, got, strict=True):
        if wtype != gtype:
            return f"{name!r} element type {wtype} became {gtype}"
        if wdims is None:
            continue
        if gdims is None or len(gdims) != len(wdims):
            return f"{name!r} shape {wdims} became {gdims}"
        if any(w is not None and w != g for w, g in zip(wdims, gdims, strict=True)):
            return f"{name!r} shape {wdims} became {gdims}"
    return ""
