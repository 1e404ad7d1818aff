"""Dynamic-range ("hybrid") quantization: int8 weights, float32 activations.

The float TFLite is rewritten so that every CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED
stores its weights as symmetric per-channel int8 (zero point 0, channel axis of the TFLite
layout). LiteRT's hybrid kernels quantize the float input on the fly per batch row and
dequantize the int32 result; biases and every other tensor stay float32.

Weight scales come from the QDQ model when it has them (the bridge quantizer's "dynamic" mode
writes DequantizeLinear on the weights only), else from max|w_c| / 127 per channel.

Hybrid kernels shrink the file about 4× but are not faster on a CPU with XNNPACK: XNNPACK does
not take hybrid convolutions, so they run on LiteRT's reference-optimised kernels. On the
development machine (2 cores, 1 thread) MobileNetV2 ran about 3× slower than the float32
model; use "int8" for speed and "dynamic" for size without calibration.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from bridge.artifact import OnnxArtifact, TfliteArtifact
from bridge.lower import int8_kernels, tflite_io
from bridge.lower.int8_graph import Graph, quantization
from bridge.lower.int8_match import match_channels
from bridge.lower.int8_qdq import QdqModel, read_qdq
from bridge.lower.modes import MODES

log = logging.getLogger(__name__)

#: Operators whose weights become int8 (their hybrid kernel versions are in int8_kernels).
HYBRID_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


@MODES.register("dynamic")
def lower_dynamic(artifact: OnnxArtifact, *, nhwc: bool = False) -> TfliteArtifact:
    """Lower a float or weight-only QDQ ONNX model to a dynamic-range TFLite model."""
    from bridge.lower import lower_float

    qdq = read_qdq(artifact.model)
    float_tflite = lower_float(artifact.evolve(model=qdq.float_model), nhwc=nhwc)
    return hybridize(float_tflite, artifact, qdq=qdq)


def hybridize(
    float_tflite: TfliteArtifact, source: OnnxArtifact, *, qdq: QdqModel | None = None
) -> TfliteArtifact:
    """Store the weights of the float TFLite's CONV_2D/DEPTHWISE_CONV_2D/FULLY_CONNECTED as int8.

    Args:
        float_tflite: the float lowering of `qdq.float_model` (or of `source.model`).
        source: the ONNX artifact it came from.
        qdq: `read_qdq(source.model)`, whose weight scales are used where they match.
    """
    qdq = qdq or read_qdq(source.model)
    onnx_weights = _onnx_weights(qdq)
    model = tflite_io.load(float_tflite.data)
    graph = Graph(model)
    done: dict[int, int] = {}
    quantized, sources, kept = 0, {"qdq": 0, "computed": 0}, []
    for op in graph.ops:
        op_type = graph.op_type(op)
        k = int8_kernels.kernel(op_type)
        if op_type not in HYBRID_OPS or k is None or k.weight is None or k.hybrid is None:
            continue
        pos, axis = k.weight
        w_idx = int(op.inputs[pos])
        w = graph.constant(w_idx)
        if w is None or graph.tensor(w_idx).type != 0:
            kept.append({"op": op_type, "tensor": graph.name(w_idx), "reason": "weight is computed"})
            continue
        if w_idx not in done:
            done[w_idx], origin = _int8_weight(graph, w_idx, axis, onnx_weights)
            sources[origin] += 1
        op.inputs[pos] = done[w_idx]
        if op_type == "FULLY_CONNECTED":
            op.builtinOptions.asymmetricQuantizeInputs = True
        graph.set_version(op, k.hybrid)
        quantized += 1
    graph.commit()
    data = tflite_io.save(model)
    log.info("dynamic: %d ops with int8 weights, %.2f MB", quantized, len(data) / 1e6)
    facts: dict[str, Any] = {
        "float_ops": kept,
        "quantized_ops": quantized,
        "qparams_source": "qdq" if sources["computed"] == 0 and quantized else "computed",
        "weight_scales": sources,
    }
    return TfliteArtifact(
        data=data, contract=float_tflite.contract, mode="dynamic", source=source, facts=facts
    )


def _onnx_weights(qdq: QdqModel) -> dict[str, tuple[np.ndarray, int, np.ndarray]]:
    """Name → (dequantized weight, channel axis, scales) of the QDQ's symmetric int8 weights."""
    from onnx import numpy_helper

    out = {}
    for init in qdq.float_model.graph.initializer:
        qp = qdq.constants.get(init.name)
        if qp is not None and qp.per_channel and qp.dtype == "int8" and not qp.zero_point.any():
            out[init.name] = (numpy_helper.to_array(init), int(qp.axis), qp.scale)
    return out


def _int8_weight(
    graph: Graph, idx: int, axis: int, onnx_weights: dict[str, tuple[np.ndarray, int, np.ndarray]]
) -> tuple[int, str]:
    """A new int8 tensor for float weight `idx`; returns (index, "qdq" or "computed")."""
    w = graph.constant(idx).astype(np.float64)
    found = match_channels(w, axis, {k: (v, a) for k, (v, a, _) in onnx_weights.items()})
    if found is not None:
        scale = np.asarray(onnx_weights[found][2], np.float64)
        origin = "qdq"
    else:
        scale = np.max(np.abs(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)), axis=1) / 127
        origin = "computed"
    scale = np.where(scale > 0, scale, 1.0)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    quant = quantization(scale.astype(np.float32), np.zeros(scale.size, np.int64), axis=axis)
    return graph.add_tensor(graph.name(idx), graph.tensor(idx).shape, 9, data=q, quant=quant), origin

