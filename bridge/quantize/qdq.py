"""Write the quantization plan into the graph as QuantizeLinear/DequantizeLinear (QDQ) pairs.

- Activations: per tensor, ``X → QuantizeLinear → DequantizeLinear → consumers`` with scalar
  scale and zero-point initializers (int8 asymmetric, or int16 symmetric for "int16x8").
  Tensors that must share a scale (see rules.py) get the qparams of their merged range; a
  fixed-qparams op (Sigmoid, Softmax, Tanh) imposes its own on its group.
- Weights: int8 initializers, symmetric per channel, followed by DequantizeLinear with `axis`.
- Biases: int32 initializers with scale s_in·s_w and zero point 0, then DequantizeLinear. A
  16x8 bias is int64 (weights.BIAS_DTYPES), which DequantizeLinear does not take: the model
  holds its values q·s_in·s_w as a float32 initializer, which the lowering turns back into q.
- Graph inputs and outputs keep their names and float32 type: a quantized graph output is the
  DequantizeLinear output, and the producer's float result is renamed "<name>_float".

When the producer of a quantized tensor is quantized, every consumer reads the dequantized
value (as in TFLite, where only the integer tensor exists); when the producer stays float, float
consumers keep reading the float value and only quantized consumers read the QDQ'd one.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from bridge.artifact import OnnxArtifact
from bridge.errors import ConfigError
from bridge.qparams import QParams, affine_qparams, qrange
from bridge.quantize.config import QuantConfig
from bridge.quantize.gptq import InputMoments
from bridge.quantize.observers import Observer
from bridge.quantize.plan import QuantPlan, build_plan, constant_values
from bridge.quantize.rules import REACH_CUT_OPS, SHARED_SCALE_MAX_RATIO, SOFTMAX_INPUT_SPAN
from bridge.quantize.weights import BIAS_DTYPES, quantize_bias, quantize_weight

log = logging.getLogger(__name__)

#: Lowest opset with per-axis DequantizeLinear, and with int16 Q/DQ.
MIN_OPSET = 13
INT16_OPSET = 21


def weight_moments(model: onnx.ModelProto, config: QuantConfig) -> InputMoments:
    """An empty `InputMoments` for the weights `config`'s plan quantizes (filled by calibrate)."""
    plan = build_plan(model, config)
    return InputMoments(model, {u.weight: (u.node, u.axis) for u in plan.weights})


def quantize_model(
    artifact: OnnxArtifact,
    observers: Mapping[str, Observer],
    config: QuantConfig,
    *,
    moments: InputMoments | None = None,
    float_weights: bool = False,
) -> OnnxArtifact:
    """The QDQ model for `artifact` under `config`, using the observers' ranges.

    With `moments` (the weights' input moments from calibration), weights are rounded by
    GPTQ (`bridge.quantize.gptq`) at the same per-channel scales; otherwise to nearest. With
    `float_weights`, weights and biases stay the float initializers and only activations and
    other constants are quantized (the cross-fit check's fold models).

    Returns:
        the artifact at stage "quantize", with facts["quantization"] describing every
        quantized tensor (scale, zero point, dtype, axis, range, observer) and the nodes kept
        float, with reasons.
    """
    model = _with_opset(artifact.model, INT16_OPSET if config.mode == "int16x8" else MIN_OPSET)
    plan = build_plan(model, config, observers=None if config.mode == "dynamic" else observers)
    writer = _Writer(model, plan, config)
    if not float_weights:
        writer.weights(moments)
    if config.activation_dtype is not None:
        writer.activations(observers)
        writer.constants()
        if not float_weights:
            writer.biases()
    out = writer.finish()
    facts = {
        "mode": config.mode,
        "observer": config.observer if config.activation_dtype else None,
        "config": config.to_dict(),
        "activation_dtype": config.activation_dtype,
        "weight_dtype": "int8",
        "bias_dtype": BIAS_DTYPES.get(config.activation_dtype or "int8"),
        "io_dtype": config.io_dtype,
        "opset": _opset(out),
        "tensors": writer.facts,
        "float_nodes": plan.float_nodes,
        "fused_activations": plan.fused,
        "fused_patterns": plan.patterns,
        "shared_scale_groups": [g for g in plan.groups if len(g) > 1],
        "narrow_in_shared_scale": writer.narrow,
        "calibration_samples": max((o.count for o in observers.values()), default=0),
    }
    return artifact.evolve(model=out, stage="quantize", facts={"quantization": facts})


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _with_opset(model: onnx.ModelProto, minimum: int) -> onnx.ModelProto:
    """A copy of `model` at opset ≥ `minimum` (converted with onnx's version converter)."""
    version = _opset(model)
    if version >= minimum:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        return copy
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(model, minimum)
    except Exception as e:  # the converter raises plain RuntimeErrors
        raise ConfigError(
            f"cannot convert the model from opset {version} to {minimum}, which QDQ needs: {e}; "
            "export with opset_version >= 17"
        ) from e
    converted.ir_version = max(converted.ir_version, 10 if minimum >= INT16_OPSET else 7)
    return converted


class _Writer:
    """Accumulates the new nodes, initializers and facts, then rebuilds the graph."""

    def __init__(self, model: onnx.ModelProto, plan: QuantPlan, config: QuantConfig) -> None:
        self.model = model
        self.plan = plan
        self.config = config
        self.graph = model.graph
        self.consts = constant_values(model)
        self.names = {t for n in self.graph.node for t in [*n.input, *n.output]}
        self.names |= {t.name for t in self.graph.initializer}
        self.names |= {i.name for i in [*self.graph.input, *self.graph.output]}
        self.inits: list[onnx.TensorProto] = []
        self.head: list[onnx.NodeProto] = []  # DequantizeLinear of constants, first
        self.after: dict[str, list[onnx.NodeProto]] = {}  # tensor → QDQ nodes after it
        self.node_inputs: dict[tuple[str, str], str] = {}  # (node, tensor) → replacement
        self.rewire: dict[str, str] = {}  # tensor → its dequantized name, for every consumer
        self.rewire_quantized: dict[str, str] = {}  # … for quantized consumers only
        self.rewire_float: dict[str, str] = {}  # … for float consumers only
        self.renamed_outputs: dict[str, str] = {}
        self.qparams: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.facts: dict[str, dict[str, Any]] = {}
        self.weight_scale: dict[str, np.ndarray] = {}
        self.groups = plan.group_of()
        self.narrow: list[dict[str, Any]] = []  # shared-scale members left few levels

    # names and initializers ------------------------------------------------------------
    def _unique(self, name: str) -> str:
        base, k = name, 1
        while name in self.names:
            name, k = f"{base}_{k}", k + 1
        self.names.add(name)
        return name

    def _init(self, name: str, value: np.ndarray) -> str:
        name = self._unique(name)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def _dq(self, q_name: str, scale: np.ndarray, zero: np.ndarray, base: str, axis: int | None):
        s = self._init(f"{base}_scale", scale)
        z = self._init(f"{base}_zero_point", zero)
        out = self._unique(f"{base}_dequantized")
        attrs = {} if axis is None else {"axis": axis}
        node = helper.make_node(
            "DequantizeLinear",
            [q_name, s, z],
            [out],
            name=self._unique(f"{base}_DequantizeLinear"),
            **attrs,
        )
        return node, out

    # weights and biases ----------------------------------------------------------------
    def weights(self, moments: InputMoments | None = None) -> None:
        done: dict[tuple[str, int | None], str] = {}
        for use in self.plan.weights:
            key = (use.weight, use.axis)
            if key not in done:
                w = self.consts[use.weight]
                q, scale, zero = quantize_weight(w, use.axis)
                rounded = None
                if moments is not None and use.axis is not None:
                    rounded = moments.round(use.weight, w, scale)
                if rounded is not None:
                    q = rounded
                q_name = self._init(f"{use.weight}_quantized", q)
                node, out = self._dq(q_name, scale, zero, use.weight, use.axis)
                self.head.append(node)
                done[key] = out
                self.weight_scale[out] = scale
                self.facts.setdefault(
                    use.weight,
                    _fact(
                        "weight",
                        scale,
                        zero,
                        "int8",
                        use.axis,
                        (w.min(), w.max()),
                        "per_channel_minmax" if use.axis is not None else "minmax",
                        rounding="gptq" if rounded is not None else "nearest",
                        q=q_name,
                        dq=out,
                        node=use.node,
                    ),
                )
            self.node_inputs[(use.node, use.weight)] = done[key]

    def biases(self) -> None:
        for use in self.plan.weights:
            if use.bias is None or use.source is None:
                continue
            s_in = self.qparams[use.source][0]
            s_w = self.weight_scale[self.node_inputs[(use.node, use.weight)]]
            b = self.consts[use.bias]
            dtype = BIAS_DTYPES[self.config.activation_dtype or "int8"]
            q, scale, zero = quantize_bias(b, s_in, s_w, name=use.bias, dtype=dtype)
            key = use.bias if use.bias not in self.facts else f"{use.bias}@{use.node}"
            if dtype == "int64":  # no int64 DequantizeLinear: the values on the grid, float32
                out = q_name = self._init(f"{use.bias}_quantized", _on_grid(q, scale))
            else:
                q_name = self._init(f"{use.bias}_quantized", q)
                node, out = self._dq(q_name, scale, zero, use.bias, 0)
                self.head.append(node)
            self.node_inputs[(use.bias_reader, use.bias)] = out
            self.facts[key] = _fact(
                "bias",
                scale,
                zero,
                dtype,
                0,
                (b.min(), b.max()),
                "s_in*s_w",
                q=q_name,
                dq=out,
                node=use.bias_reader,
                input=use.source,
                weight=use.weight,
            )

    # activations and constants ---------------------------------------------------------
    def activations(self, observers: Mapping[str, Observer]) -> None:
        dtype = self.config.activation_dtype or "int8"
        symmetric = self.config.symmetric_activations
        used_range: dict[str, tuple[float, float]] = {}
        for group in self.plan.groups:
            sym = symmetric or any(t in self.plan.symmetric for t in group)
            scale, zero, rng = self._group_qparams(group, observers, dtype, sym)
            for t in group:
                self.qparams[t] = (scale, zero)
                used_range[t] = rng
        producers = {t: i for i, n in enumerate(self.graph.node) for t in n.output}
        outputs = {o.name for o in self.graph.output}
        # integer model inputs reach every reader dequantized, float ones too
        int_inputs = {i.name for i in self.graph.input} if self.config.io_dtype != "float32" else ()
        for t in self.plan.activations:
            scale, zero = self.qparams[t]
            producer_quantized = producers.get(t) in self.plan.quantized or t in int_inputs
            src = t
            if t in outputs and t in producers:
                src = self._unique(f"{t}_float")
                self.renamed_outputs[t] = src
                if not producer_quantized:
                    self.rewire_float[t] = src  # float readers keep the float value
            q_name = self._unique(f"{t}_quantized")
            s = self._init(f"{t}_scale", scale)
            z = self._init(f"{t}_zero_point", zero)
            q_node = helper.make_node(
                "QuantizeLinear", [src, s, z], [q_name], name=self._unique(f"{t}_QuantizeLinear")
            )
            dq_out = t if src != t else self._unique(f"{t}_dequantized")
            dq_node = helper.make_node(
                "DequantizeLinear",
                [q_name, s, z],
                [dq_out],
                name=self._unique(f"{t}_DequantizeLinear"),
            )
            self.after.setdefault(t, []).extend([q_node, dq_node])
            (self.rewire if producer_quantized else self.rewire_quantized)[t] = dq_out
            obs = observers.get(t)
            source = "fixed" if t in self.plan.fixed else (obs.name if obs else "shared")
            self.facts[t] = _fact(
                "activation",
                scale,
                zero,
                dtype,
                None,
                used_range[t],
                source,
                q=q_name,
                dq=dq_out,
                input=src,
                observed_range=list(obs.range()) if obs is not None else None,
                shares_scale_with=[m for m in self._group(t) if m != t],
                symmetric=bool(int(np.asarray(zero)) == 0 and t in self.plan.symmetric),
            )

    def _group_qparams(
        self, group: list[str], observers: Mapping[str, Observer], dtype: str, symmetric: bool
    ) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
        """One (scale, zero point, range) for tensors that share a scale."""
        fixed = list(dict.fromkeys(self.plan.fixed[t] for t in group if t in self.plan.fixed))
        if fixed:
            if len(fixed) > 1:
                log.warning(
                    "tensors %s share a scale but have different fixed qparams %s; using %s",
                    group,
                    fixed,
                    fixed[0],
                )
            scale = np.asarray(fixed[0][0], np.float32)
            zero = np.asarray(fixed[0][1], dtype)
            qmin, qmax = qrange(dtype)
            z = int(fixed[0][1])
            rng = (float((qmin - z) * scale), float((qmax - z) * scale))
            return scale, zero, rng
        ranges, lo, hi = self._observed_range(group, observers)
        lo, hi = self._reachable(group, observers, lo, hi)
        self._check_spread(ranges, lo, hi)
        scale, zero = affine_qparams(lo, hi, dtype=dtype, symmetric=symmetric)
        return scale, zero, (lo, hi)

    def _observed_range(
        self, group: list[str], observers: Mapping[str, Observer]
    ) -> tuple[dict[str, tuple[float, float]], float, float]:
        """The members' ranges, and the group's [lo, hi] (with the Softmax input cut)."""
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

    def _range_of(self, t: str, observers: Mapping[str, Observer]) -> tuple[float, float] | None:
        """The range tensor `t`'s group is quantized to, before any reach cut; None if none."""
        group = self._group(t)
        fixed = [self.plan.fixed[m] for m in group if m in self.plan.fixed]
        if fixed:
            qmin, qmax = qrange(self.config.activation_dtype or "int8")
            (scale, z) = fixed[0]
            return float((qmin - z) * scale), float((qmax - z) * scale)
        if not any(m in observers or m in self.consts for m in group):
            return None
        _, lo, hi = self._observed_range(group, observers)
        return lo, hi

    def _reachable(
        self, group: list[str], observers: Mapping[str, Observer], lo: float, hi: float
    ) -> tuple[float, float]:
        """Cut [lo, hi] to the values that can reach the output ranges of the group's readers
        when every reader is a quantized Add (rules.REACH_CUT_OPS): b ∈ [L − hi_a, H − lo_a]
        for an output quantized to [L, H]; anything beyond saturates the output either way."""
        need: list[tuple[float, float]] = []
        for t in group:
            if t in self._graph_outputs:
                return lo, hi
            for i in self._readers.get(t, []):
                data = self.plan.data_inputs.get(i, [])
                node = self.graph.node[i]
                if i not in self.plan.quantized or node.op_type not in REACH_CUT_OPS:
                    return lo, hi
                if len(data) != 2:
                    return lo, hi
                others = [x for x in data if x != t]
                if len(others) != 1:
                    return lo, hi
                out = self._range_of(node.output[0], observers)
                other = self._range_of(others[0], observers)
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

    def _check_spread(self, ranges: Mapping[str, tuple[float, float]], lo: float, hi: float):
        """Report members of a shared-scale group left few levels (rules.SHARED_SCALE_MAX_RATIO)."""
        width = max(hi, 0.0) - min(lo, 0.0)
        for t, (a, b) in ranges.items():
            if a == b == 0.0:  # an all-zero tensor (Min(x, 0)'s bound) is exact at any scale
                continue
            ratio = width / max(max(b, 0.0) - min(a, 0.0), 1e-30)
            if ratio > SHARED_SCALE_MAX_RATIO:
                log.warning("%r shares one int8 scale with a range %.0f× wider", t, ratio)
                self.narrow.append(
                    {
                        "tensor": t,
                        "ratio": float(ratio),
                        "levels": float(256 / ratio),
                        "shares_scale_with": [m for m in ranges if m != t],
                    }
                )

    def constants(self) -> None:
        dtype = self.config.activation_dtype or "int8"
        for t in self.plan.constants:
            value = self.consts[t]
            scale, zero = self.qparams[t]
            q = QParams(scale, zero, dtype).quantize(value.astype(np.float32))
            q_name = self._init(f"{t}_quantized", q)
            node, out = self._dq(q_name, scale, zero, t, None)
            self.head.append(node)
            self.rewire_quantized[t] = out
            self.facts[t] = _fact(
                "constant",
                scale,
                zero,
                dtype,
                None,
                (value.min(), value.max()),
                "minmax",
                q=q_name,
                dq=out,
                shares_scale_with=[m for m in self._group(t) if m != t],
            )

    def _group(self, t: str) -> list[str]:
        return self.groups.get(t, [t])

    # assembly --------------------------------------------------------------------------
    def finish(self) -> onnx.ModelProto:
        graph = self.graph
        # nodes inside a fused op read quantized values, as the fused TFLite op does
        quantized_names = {
            self.plan.node_names[i] for i in [*self.plan.quantized, *self.plan.inside]
        }
        inputs = {i.name for i in graph.input}
        nodes: list[onnx.NodeProto] = list(self.head)
        for t in self.plan.activations:
            if t in inputs:
                nodes.extend(self.after.get(t, []))
        for name, node in zip(self.plan.node_names, graph.node, strict=True):
            new = onnx.NodeProto()
            new.CopyFrom(node)
            for k, t in enumerate(node.input):
                if (name, t) in self.node_inputs:
                    new.input[k] = self.node_inputs[(name, t)]
                elif t in self.rewire:
                    new.input[k] = self.rewire[t]
                elif t in self.rewire_quantized and name in quantized_names:
                    new.input[k] = self.rewire_quantized[t]
                elif t in self.rewire_float and name not in quantized_names:
                    new.input[k] = self.rewire_float[t]
            for k, t in enumerate(node.output):
                if t in self.renamed_outputs:
                    new.output[k] = self.renamed_outputs[t]
            nodes.append(new)
            for t in node.output:
                nodes.extend(self.after.get(t, []))
        del graph.node[:]
        graph.node.extend(nodes)
        used = {t for n in graph.node for t in n.input} | {o.name for o in graph.output}
        kept = [t for t in graph.initializer if t.name in used]
        del graph.initializer[:]
        graph.initializer.extend([*kept, *self.inits])
        return self.model


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


def _on_grid(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """q·scale rounded to float32, as DequantizeLinear computes it: dividing by the scale and
    rounding gives q back for |q| < 2**23, and within float32's relative 2**-24 beyond."""
    return (q.astype(np.float64) * scale.astype(np.float64)).astype(np.float32)


def _fact(
    kind: str,
    scale: np.ndarray,
    zero: np.ndarray,
    dtype: str,
    axis: int | None,
    rng: tuple[Any, Any],
    observer: str,
    **extra: Any,
) -> dict[str, Any]:
    """A JSON-serialisable description of one quantized tensor."""
    return {
        "kind": kind,
        "scale": np.atleast_1d(np.asarray(scale, np.float32)).tolist(),
        "zero_point": np.atleast_1d(np.asarray(zero)).astype(np.int64).tolist(),
        "dtype": dtype,
        "axis": axis,
        "range": [float(rng[0]), float(rng[1])],
        "observer": observer,
        **extra,
    }
