"""Sequential empirical bias correction (Nagel et al. 2019, §4.2; as in AIMET and Brevitas).

Rounded weights and activations shift each layer's expected output: E[W_q·x_q] ≠ E[W·x], and
the shift is systematic (per output channel, the same on every input), so it passes through
the following ReLUs and layers and grows along the network. The correction measures, for each
layer with a bias, the per-channel mean of its output in the float model and in the QDQ
model over calibration samples, and adds the difference to the bias:

    b_c ← b_c + (E[y_float]_c − E[y_qdq]_c)

Layers are corrected one after the other in graph order, each measured with every upstream
layer already quantized *and corrected* (`bridge.quantize.segments` runs the QDQ graph in
pieces cut after each layer, so this costs one forward pass per sample, not one per layer).
Correcting all layers from one measurement instead double-counts the shift that upstream
corrections already remove, and diverges on deep networks.

The change is made on the integer bias in whole steps of its scale s_in·s_w, so every scale and
zero point of the QDQ model stays as it was; only bias integers move. (A 16x8 bias is int64,
which the QDQ model holds as float32 values on its grid: see `bridge.quantize.qdq`.)

Which layers: convolutions (their output positions are alike, so one shift per channel fits
them all) and layers with 2-D outputs (rows are samples). A layer over a token sequence
([batch, tokens, channels]) is left alone: its tokens err differently (a class token beside
patch tokens), and one per-channel shift fitted to their average cost ViT-tiny 1.4 dB. With
one row per sample, a shift is estimated from a few dozen rows, so it is shrunk towards 0 by
its standard error (kept where it stands out, as for ResNet18's classifier: +0.4 dB).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from bridge.artifact import OnnxArtifact
from bridge.errors import ModelLoadError
from bridge.quantize.segments import SegmentedGraph
from bridge.runtime.runners import OrtRunner

log = logging.getLogger(__name__)

#: Ops whose output channels lie on axis 1 (NCHW); any other biased op's lie on the last axis.
CHANNEL_AXIS_1 = ("Conv", "ConvTranspose")
#: Bytes of activations the layer-by-layer pass may hold for all its samples at once; fewer
#: samples are used when one sample's live tensors (`LIVE_TENSORS` × the largest layer output)
#: would not fit, but never fewer than `MIN_SAMPLES`.
MEMORY_BUDGET = 1 << 30
LIVE_TENSORS = 4
MIN_SAMPLES = 4


@dataclass(frozen=True)
class _Layer:
    """A biased layer: its QDQ node, float output, bias initializer and bias scale."""

    bias: str  # the float bias name (the facts key)
    node: int  # index of the node reading the dequantized bias, in the QDQ graph
    float_output: str  # that node's output in the float model
    q_init: str  # the bias initializer (integer, or float32 on the grid) in the QDQ model
    scale: np.ndarray
    axis: int


def correct_biases(
    qdq: OnnxArtifact,
    float_model: onnx.ModelProto,
    samples: Sequence[Mapping[str, np.ndarray]],
) -> OnnxArtifact:
    """`qdq` with its biases corrected for the mean output shift, layer by layer.

    Args:
        qdq: the QDQ artifact (facts["quantization"] lists its biases).
        float_model: the float model `qdq` was made from (same tensor and initializer names).
        samples: calibration feeds (graph input name → array), a few dozen at most.

    Returns:
        the artifact with new bias integers, and facts["quantization"]["bias_correction"]
        (samples, layers corrected, largest shift in bias steps).
    """
    if not samples:
        return qdq
    layers = _layers(qdq, float_model)
    if not layers:
        return qdq
    stats = _float_stats(float_model, qdq, samples, layers)
    n = min(len(samples), max(MIN_SAMPLES, int(MEMORY_BUDGET // max(stats.bytes, 1))))
    samples = samples[:n]
    target = {k: np.mean(v[:n], axis=0) for k, v in stats.means.items()}
    rows = {k: np.concatenate(v[:n]) for k, v in stats.rows.items()}
    layers = [x for x in layers if x.axis == 1 or x.bias in rows]
    if not layers:
        return qdq
    try:
        segments = SegmentedGraph(qdq.model, [layer.node for layer in layers])
    except ValueError as e:
        log.info("bias correction skipped: %s", e)
        return qdq
    correct = _Corrector(layers, target, rows, qdq.model)
    try:
        segments.run(samples, correct)
    except ModelLoadError as e:  # a piece ONNX Runtime cannot run: keep the plain biases
        log.warning("bias correction skipped: %s", e)
        return qdq
    model = _with_biases(qdq.model, layers, correct.new_q)
    facts = _corrected_facts(qdq.facts["quantization"], layers, correct, len(samples))
    log.info("bias correction: %d layers on %d samples", len(correct.new_q), len(samples))
    return qdq.evolve(model=model, facts={"quantization": facts})


class _Corrector:
    """The SegmentedGraph edit: shift each layer's bias (in whole steps, clipped to its stored
    type) so its channel means match the float model's, and pass the shifted values on."""

    def __init__(
        self,
        layers: Sequence[_Layer],
        target: Mapping[str, np.ndarray],
        rows: Mapping[str, np.ndarray],
        model: onnx.ModelProto,
    ) -> None:
        self.by_node = {layer.node: layer for layer in layers}
        self.target, self.rows = target, rows
        self.inits = {t.name: t for t in model.graph.initializer}
        self.new_q: dict[str, np.ndarray] = {}  # bias initializer → corrected stored values
        self.shifts: list[float] = []  # largest shift per layer, in bias steps

    def __call__(self, node: int, values: list[np.ndarray]) -> list[np.ndarray]:
        layer = self.by_node[node]
        shift = self.target[layer.bias] - _channel_mean(values, layer.axis)
        if layer.bias in self.rows:  # few rows: keep only the part of the shift above its noise
            shift = _shrink(shift, np.concatenate(values) - self.rows[layer.bias])
        steps = np.rint(shift / layer.scale)
        q, info = _stored_steps(numpy_helper.to_array(self.inits[layer.q_init]), layer.scale)
        corrected = np.clip(q + steps, info.min, info.max)
        steps = corrected - q
        self.new_q[layer.q_init] = corrected
        self.shifts.append(float(np.abs(steps).max()) if steps.size else 0.0)
        delta = _along(steps * layer.scale, values[0].ndim, layer.axis).astype(np.float32)
        for v in values:
            v += delta
        return values


def _with_biases(
    source: onnx.ModelProto, layers: Sequence[_Layer], new_q: Mapping[str, np.ndarray]
) -> onnx.ModelProto:
    """A copy of `source` with the corrected bias initializers (stored float or integer)."""
    model = onnx.ModelProto()
    model.CopyFrom(source)
    scales = {layer.q_init: layer.scale for layer in layers}
    for t in model.graph.initializer:
        if t.name in new_q:
            dtype = numpy_helper.to_array(t).dtype
            value = new_q[t.name] * scales[t.name] if dtype.kind == "f" else new_q[t.name]
            t.CopyFrom(numpy_helper.from_array(value.astype(dtype), t.name))
    return model


def _corrected_facts(
    quantization: Mapping[str, Any], layers: Sequence[_Layer], correct: _Corrector, samples: int
) -> dict[str, Any]:
    """facts["quantization"] with the corrected biases' ranges and a "bias_correction" entry."""
    facts = dict(quantization)
    facts["tensors"] = dict(facts["tensors"])
    for layer in layers:
        if layer.q_init in correct.new_q:
            b = correct.new_q[layer.q_init] * layer.scale
            fact = dict(facts["tensors"][layer.bias])
            fact["range"] = [float(b.min()), float(b.max())]
            facts["tensors"][layer.bias] = fact
    facts["bias_correction"] = {
        "samples": samples,
        "layers": len(correct.new_q),
        "max_shift_steps": max(correct.shifts, default=0.0),
    }
    return facts


def _layers(qdq: OnnxArtifact, float_model: onnx.ModelProto) -> list[_Layer]:
    """The biased layers found in both graphs, in QDQ graph order."""
    tensors = qdq.facts.get("quantization", {}).get("tensors", {})
    qnodes = list(qdq.model.graph.node)
    reader = {t: i for i, n in enumerate(qnodes) for t in n.input if t}
    float_readers: dict[str, list[onnx.NodeProto]] = {}
    for n in float_model.graph.node:
        for t in n.input:
            float_readers.setdefault(t, []).append(n)
    inits = {t.name for t in qdq.model.graph.initializer}
    layers = []
    for key, fact in tensors.items():
        if fact.get("kind") != "bias" or "@" in key or fact.get("q") not in inits:
            continue
        node = reader.get(fact.get("dq"))
        readers = float_readers.get(key, [])
        if node is None or len(readers) != 1 or readers[0].op_type != qnodes[node].op_type:
            continue
        op = qnodes[node].op_type
        layers.append(
            _Layer(
                bias=key,
                node=node,
                float_output=readers[0].output[0],
                q_init=fact["q"],
                scale=np.asarray(fact["scale"], np.float64),
                axis=1 if op in CHANNEL_AXIS_1 else -1,
            )
        )
    return sorted(layers, key=lambda layer: layer.node)


@dataclass
class _FloatStats:
    """Per sample: each layer's per-channel float output mean, and the float outputs of 2-D
    layers (rows × channels); `bytes`: a bound on one sample's live activations."""

    means: dict[str, list[np.ndarray]] = field(default_factory=dict)
    rows: dict[str, list[np.ndarray]] = field(default_factory=dict)
    bytes: int = 0


def _float_stats(
    float_model: onnx.ModelProto,
    qdq: OnnxArtifact,
    samples: Sequence[Mapping[str, np.ndarray]],
    layers: Sequence[_Layer],
) -> _FloatStats:
    """Run the float model over `samples` and keep what the correction needs, keyed by bias."""
    runner = OrtRunner(float_model, qdq.contract, extra_outputs=[x.float_output for x in layers])
    stats = _FloatStats()
    for feeds in samples:
        values = runner.run(feeds)
        for layer in layers:
            y = np.asarray(values[layer.float_output])
            stats.means.setdefault(layer.bias, []).append(_channel_mean([y], layer.axis))
            if y.ndim <= 2:
                stats.rows.setdefault(layer.bias, []).append(y.astype(np.float64))
            stats.bytes = max(stats.bytes, LIVE_TENSORS * y.nbytes)
    return stats


def _stored_steps(stored: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.iinfo]:
    """A stored bias in steps of `scale`, and its integer type's range: an int32 initializer,
    or a float32 one on the grid standing for int64 (16x8)."""
    if stored.dtype.kind == "f":
        return np.rint(stored.astype(np.float64) / scale), np.iinfo(np.int64)
    return stored.astype(np.int64), np.iinfo(stored.dtype)


def _shrink(shift: np.ndarray, diff: np.ndarray) -> np.ndarray:
    """`shift` (the mean of −diff per channel) scaled by max(0, 1 − SE²/shift²), SE² being the
    variance of that mean: a shift within its own noise is dropped, a clear one kept."""
    n = diff.shape[0]
    if n < 2:
        return np.zeros_like(shift)
    se2 = diff.reshape(n, -1).var(axis=0, ddof=1) / n
    keep = np.clip(1.0 - se2 / np.maximum(shift**2, 1e-30), 0.0, 1.0)
    return shift * keep


def _channel_mean(values: Sequence[np.ndarray], axis: int) -> np.ndarray:
    """Mean over every axis but `axis`, over all arrays (accumulated in float64)."""
    total = None
    count = 0
    for v in values:
        x = np.moveaxis(np.asarray(v), axis, 0)
        x = x.reshape(x.shape[0], -1)
        s = x.sum(axis=1).astype(np.float64)  # pairwise float32 sums, rows of one sample
        total = s if total is None else total + s
        count += x.shape[1]
    return total / max(count, 1)


def _along(v: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    shape = [1] * ndim
    shape[axis % ndim] = v.size
    return v.reshape(shape)
