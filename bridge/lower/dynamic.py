"""Dynamic-range ("hybrid") quantization: int8 weights, float32 activations.

The float TFLite is rewritten so that every CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED
stores its weights as symmetric per-channel int8 (zero point 0, channel axis of the TFLite
layout). LiteRT's hybrid kernels quantize the float input on the fly per batch row and
dequantize the int32 result; biases and every other tensor stay float32.

Weight scales come from the QDQ model when it has them (the bridge quantizer's "dynamic" mode
writes DequantizeLinear on the weights only), else from max|w_c| / 127 per channel.

Hybrid kernels shrink the file about 4× but are slower than float32 on a CPU: XNNPACK does not
take hybrid convolutions, so they run on LiteRT's own kernels, quantizing every input on the
fly. MobileNetV2 at 1 thread on the 2-core development machine: 14.8 ms against 6.9 ms for
float32 and 4.1 ms for "int8" (10th percentiles, round-robin; 2-3× slower in other runs). Use
"int8" for speed, "dynamic" for size without calibration data.
"""

from __future__ import annotations

import logging
from typing import Any

from bridge.artifact import OnnxArtifact, TfliteArtifact
from bridge.lower import int8_kernels, tflite_io
from bridge.lower.int8_constants import ConstantWriter
from bridge.lower.int8_graph import Graph
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
    model = tflite_io.load(float_tflite.data)
    graph = Graph(model)
    writer = ConstantWriter(graph, qdq, act_dtype="int8")
    done: dict[int, int] = {}
    quantized, kept = 0, []
    for op in graph.ops:
        op_type = graph.op_type(op)
        k = int8_kernels.kernel(op_type)
        if op_type not in HYBRID_OPS or k is None or k.weight is None or k.hybrid is None:
            continue
        pos, axis = k.weight
        w_idx = int(op.inputs[pos])
        w = graph.constant(w_idx)
        if w is None or graph.tensor(w_idx).type != 0:
            kept.append(
                {"op": op_type, "tensor": graph.name(w_idx), "reason": "weight is computed"}
            )
            continue
        if w_idx not in done:
            done[w_idx] = writer.weight(w_idx, axis)
        op.inputs[pos] = done[w_idx]
        if op_type == "FULLY_CONNECTED":
            op.builtinOptions.asymmetricQuantizeInputs = True
        graph.set_version(op, k.hybrid)
        quantized += 1
    graph.commit()
    data = tflite_io.save(model)
    log.info("dynamic: %d ops with int8 weights, %.2f MB", quantized, len(data) / 1e6)
    computed = len(writer.computed)
    facts: dict[str, Any] = {
        "float_ops": kept,
        "quantized_ops": quantized,
        "qparams_source": "computed" if computed or not quantized else "qdq",
        "weight_scales": {"qdq": len(done) - computed, "computed": computed},
    }
    return TfliteArtifact(
        data=data, contract=float_tflite.contract, mode="dynamic", source=source, facts=facts
    )
