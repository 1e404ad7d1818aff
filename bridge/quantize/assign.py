"""Decide each quantized activation's parameters from the plan and the observers (pure).

`assign_qparams` turns the plan's shared-scale groups and the observers' ranges into one
`QParams` per tensor; `qdq` only writes what it decided. A group takes:

- the fixed parameters of a fixed-qparams op (Sigmoid, Softmax, Tanh) in it, else
- the union of its members' observed ranges (constants: their min and max), with a Softmax
  input cut to what Softmax can resolve (`softmax_input_range`) and an Add's operand cut to what
  can reach the Add's output range (`_Ranges.reachable`), then `affine_qparams`.

Members of a group left few levels by a much wider member are reported in `narrow`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from bridge.qparams import QParams, qrange
from bridge.quantize.config import QuantConfig
from bridge.quantize.observers import Observer
from bridge.quantize.plan import QuantPlan, constant_values
from bridge.quantize.rules import REACH_CUT_OPS, SHARED_SCALE_MAX_RATIO, SOFTMAX_INPUT_SPAN

log = logging.getLogger(__name__)

Range = tuple[float, float]


@dataclass(frozen=True)
class Assignment:
    """The parameters `assign_qparams` chose.

    Attributes:
        qparams: tensor → its per-tensor parameters (every member of every plan group).
        ranges: tensor → the real range [lo, hi] its group was quantized to.
        narrow: shared-scale members left few levels (rules.SHARED_SCALE_MAX_RATIO), in order.
    """

    qparams: dict[str, QParams] = field(default_factory=dict)
    ranges: dict[str, Range] = field(default_factory=dict)
    narrow: list[dict[str, Any]] = field(default_factory=list)


def assign_qparams(
    plan: QuantPlan,
    observers: Mapping[str, Observer],
    *,
    model: onnx.ModelProto,
    config: QuantConfig,
) -> Assignment:
    """One `QParams` per tensor of `plan.groups`, from `observers` (nothing is mutated)."""
    dtype = config.activation_dtype or "int8"
    ranges = _Ranges(plan, observers, model, dtype)
    out = Assignment()
    for group in plan.groups:
        sym = config.symmetric_activations or any(t in plan.symmetric for t in group)
        qp, rng = ranges.group_qparams(group, sym, out.narrow)
        for t in group:
            out.qparams[t] = qp
            out.ranges[t] = rng
    return out


class _Ranges:
    """The range queries `assign_qparams` needs, over one model, plan and set of observers."""

    def __init__(
        self,
        plan: QuantPlan,
        observers: Mapping[str, Observer],
        model: onnx.ModelProto,
        dtype: str,
    ) -> None:
        self.plan = plan
        self.observers = observers
        self.graph = model.graph
        self.consts = constant_values(model)
        self.dtype = dtype
        self.groups = plan.group_of()

    def group_qparams(
        self, group: list[str], symmetric: bool, narrow: list[dict[str, Any]]
    ) -> tuple[QParams, Range]:
        """One parameter set and range for tensors that share a scale."""
        fixed = list(dict.fromkeys(self.plan.fixed[t] for t in group if t in self.plan.fixed))
        if fixed:
            if len(fixed) > 1:
                log.warning(
                    "tensors %s share a scale but have different fixed qparams %s; using %s",
                    group,
                    fixed,
                    fixed[0],
                )
            qp = QParams(fixed[0][0], fixed[0][1], self.dtype)
            return qp, self._fixed_range(fixed[0])
        ranges, lo, hi = self.observed_range(group)
        lo, hi = self.reachable(group, lo, hi)
        narrow.extend(_spread(ranges, lo, hi))
        return QParams.from_range(lo, hi, dtype=self.dtype, symmetric=symmetric), (lo, hi)

    def _fixed_range(self, fixed: tuple[float, int]) -> Range:
        qmin, qmax = qrange(self.dtype)
        scale, z = np.float32(fixed[0]), int(fixed[1])
        return float((qmin - z) * scale), float((qmax - z) * scale)

    def observed_range(self, group: list[str]) -> tuple[dict[str, Range], float, float]:
        """The members' ranges, and the group's [lo, hi] (with the Softmax input cut)."""
        observers = self.observers
        ranges = {t: observers[t].range() for t in group if t in observers}
        ranges |= {
            t: (float(self.consts[t].min()), float(self.consts[t].max()))
            for t in group
            if t in self.consts
        }
        lo = min((r[0] for r in ranges.values()), default=0.0)
        hi = max((r[1] for r in ranges.values()), default=0.0)
        if any(t in self._softmax_inputs for t in group):
            members = [observers[t] for t in group if t in observers]
            lo, hi = softmax_input_range(members, lo, hi)
        return ranges, lo, hi

    def range_of(self, t: str) -> Range | None:
        """The range tensor `t`'s group is quantized to, before any reach cut; None if none."""
        group = self.groups.get(t, [t])
        fixed = [self.plan.fixed[m] for m in group if m in self.plan.fixed]
        if fixed:
            qmin, qmax = qrange(self.dtype)
            (scale, z) = fixed[0]
            return float((qmin - z) * scale), float((qmax - z) * scale)
        if not any(m in self.observers or m in self.consts for m in group):
            return None
        _, lo, hi = self.observed_range(group)
        return lo, hi

    def reachable(self, group: list[str], lo: float, hi: float) -> Range:
        """Cut [lo, hi] to the values that can reach the output ranges of the group's readers
        when every reader is a quantized Add (rules.REACH_CUT_OPS): b ∈ [L − hi_a, H − lo_a]
        for an output quantized to [L, H]; anything beyond saturates the output either way."""
        need: list[Range] = []
        for t in group:
            if t in self._graph_outputs:
                return lo, hi
            for i in self._readers.get(t, []):
                data = self.plan.data_inputs.get(i, [])
                node = self.graph.node[i]
                if i not in self.plan.quantized or node.op_type not in REACH_CUT_OPS:
                    return lo, hi
                others = [x for x in data if x != t]
                if len(data) != 2 or len(others) != 1:
                    return lo, hi
                out = self.range_of(node.output[0])
                other = self.range_of(others[0])
                if out is None or other is None:
                    return lo, hi
                step = (out[1] - out[0]) / 255
                need.append((out[0] - other[1] - step, out[1] - other[0] + step))
        if not need:
            return lo, hi
        return max(lo, min(n[0] for n in need)), min(hi, max(n[1] for n in need))

    @functools.cached_property
    def _readers(self) -> dict[str, list[int]]:
        readers: dict[str, list[int]] = {}
        for i, node in enumerate(self.graph.node):
            for t in dict.fromkeys(x for x in node.input if x):
                readers.setdefault(t, []).append(i)
        return readers

    @functools.cached_property
    def _graph_outputs(self) -> set[str]:
        return {o.name for o in self.graph.output}

    @functools.cached_property
    def _softmax_inputs(self) -> set[str]:
        return {n.input[0] for n in self.graph.node if n.op_type == "Softmax"}


def _spread(ranges: Mapping[str, Range], lo: float, hi: float) -> list[dict[str, Any]]:
    """Members of a shared-scale group left few levels (rules.SHARED_SCALE_MAX_RATIO)."""
    width = max(hi, 0.0) - min(lo, 0.0)
    found = []
    for t, (a, b) in ranges.items():
        if a == b == 0.0:  # an all-zero tensor (Min(x, 0)'s bound) is exact at any scale
            continue
        ratio = width / max(max(b, 0.0) - min(a, 0.0), 1e-30)
        if ratio > SHARED_SCALE_MAX_RATIO:
            log.warning("%r shares one int8 scale with a range %.0f× wider", t, ratio)
            found.append(
                {
                    "tensor": t,
                    "ratio": float(ratio),
                    "levels": float(256 / ratio),
                    "shares_scale_with": [m for m in ranges if m != t],
                }
            )
    return found


def softmax_input_range(observers: Sequence[Observer], lo: float, hi: float) -> tuple[float, float]:
    """The range of a Softmax input whose observers chose [lo, hi] (rules.SOFTMAX_INPUT_SPAN).

    Softmax is shift-invariant per row, and a value more than SPAN below its row's maximum
    weighs less than e^-SPAN, below any int8 output step. An additive mask (−10000) puts the
    masked scores in a cluster far below the real ones: values under an empty gap wider than
    SPAN in the calibration histogram are such values (every row that holds a real score has
    its maximum above the gap). The range reaches SPAN below the real scores (all but their
    lowest `_CLUSTER_QUANTILE`, which lie far below their own row's maximum), so masked scores,
    clipped to its bottom, still weigh nothing in any row. The top is the observed maximum: the
    largest score of each row matters most, and the observer's error criterion, dominated by
    the masked values, may clip it. Without such a gap nothing is cut at the bottom; without a
    histogram fine enough to see one (minmax observers, float32's minimum as the mask) the
    range is cut to [hi − SPAN, hi], which can flatten rows whose maximum is far below `hi`.
    """
    if not observers:
        return lo, hi
    hi = max(hi, *(float(o.max_val) for o in observers))
    bottoms = [_cluster_bottom(o) for o in observers]
    if any(b is None for b in bottoms):
        return max(lo, hi - SOFTMAX_INPUT_SPAN), hi
    return max(lo, min(b for b in bottoms if b is not None) - SOFTMAX_INPUT_SPAN), hi


#: The fraction of the real scores (above the mask gap) that a Softmax input's range may leave
#: below it: the histogram's re-binning smears a few counts below the true minimum.
_CLUSTER_QUANTILE = 1e-5


def _cluster_bottom(observer: Observer) -> float | None:
    """The `_CLUSTER_QUANTILE` quantile of the values above every empty histogram gap wider
    than SOFTMAX_INPUT_SPAN (of all values when there is no such gap); None when the observer
    keeps no histogram or its bins are too wide to see such a gap."""
    hist = getattr(observer, "hist", None)
    if hist is None or not 0.0 < hist.width < SOFTMAX_INPUT_SPAN:
        return None
    occupied = np.flatnonzero(hist.counts > 0)
    if occupied.size == 0:
        return None
    edges = hist.edges
    gaps = edges[occupied[1:]] - edges[occupied[:-1] + 1]
    wide = np.flatnonzero(gaps > SOFTMAX_INPUT_SPAN)
    start = int(occupied[wide[-1] + 1]) if wide.size else int(occupied[0])
    cluster = hist.counts[start:]
    cdf = np.cumsum(cluster) / cluster.sum()
    k = int(np.searchsorted(cdf, _CLUSTER_QUANTILE, side="right"))
    return max(float(edges[start + k]), float(observer.min_val))
