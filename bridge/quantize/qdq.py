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

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from bridge.artifact import OnnxArtifact
from bridge.errors import ConfigError
from bridge.qparams import QParams
from bridge.quantize.assign import Assignment, assign_qparams
from bridge.quantize.config import QuantConfig
from bridge.quantize.gptq import InputMoments
from bridge.quantize.observers import Observer
from bridge.quantize.plan import QuantPlan, build_plan, constant_values
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
    act = config.activation_dtype
    model = _with_opset(artifact.model, INT16_OPSET if act == "int16" else MIN_OPSET)
    plan = build_plan(model, config, observers=None if act is None else observers)
    writer = _Writer(model, plan, config)
    if not float_weights:
        writer.weights(moments)
    if config.activation_dtype is not None:
        writer.activations(assign_qparams(plan, observers, model=model, config=config), observers)
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
    def activations(self, assigned: Assignment, observers: Mapping[str, Observer]) -> None:
        """QuantizeLinear → DequantizeLinear after every planned activation, as `assigned`."""
        dtype = self.config.activation_dtype or "int8"
        self.qparams = {t: _scalars(qp) for t, qp in assigned.qparams.items()}
        self.narrow = assigned.narrow
        used_range = assigned.ranges
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


def _scalars(qp: QParams) -> tuple[np.ndarray, np.ndarray]:
    """A per-tensor QParams as the 0-d (scale, zero point) initializers QDQ stores."""
    return qp.scale.reshape(()), qp.zero_point.astype(qp.dtype).reshape(())


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
