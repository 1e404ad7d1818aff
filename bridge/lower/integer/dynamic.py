"""Dynamic-range ("hybrid") quantization: int8 weights, float32 activations.

The float TFLite is rewritten so that every CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED
stores its weights as symmetric per-channel int8 (zero point 0, channel axis of the TFLite
layout). LiteRT's hybrid kernels quantize the float input on the fly per batch row and
dequantize the int32 result; biases and every other tensor stay float32.

Two rewrites first bring the other large constants under int8, as TF's converter does:
- a BATCH_MATMUL whose second input is a constant W (K×N, leading dims 1) becomes
  FULLY_CONNECTED(x, Wᵀ) with keep_num_dims: the same x·W over x's last axis, with FC's [N, K]
  weight layout, so it gets FC's per-channel hybrid kernel (a transformer's linear layers);
- the constant table of a GATHER (an embedding) is stored int8, symmetric per row, and read
  through a DEQUANTIZE, which LiteRT evaluates once at the first run: the file shrinks, the
  runtime still holds the table in float32.

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

import numpy as np

from bridge.artifact import OnnxArtifact, TfliteArtifact
from bridge.lower.floating import lower_float
from bridge.lower.integer import kernels
from bridge.lower.integer.constants import TYPE_CODES, ConstantWriter
from bridge.lower.integer.qdq import QdqModel, read_qdq
from bridge.lower.integer.weight_only import DEQUANTIZE_PER_CHANNEL_VERSION
from bridge.lower.modes import MODES
from bridge.lower.tflite_graph import Graph, quantization
from bridge.quantize.weights import quantize_weight
from bridge.runtime import tflite_io

log = logging.getLogger(__name__)

#: Operators whose weights become int8 (their hybrid kernel versions are in kernels).
HYBRID_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
#: GATHER tables smaller than this stay float (TF's converter: min_elements_for_weights = 1024).
MIN_TABLE_ELEMENTS = 1024
#: FULLY_CONNECTED version of float kernels with keep_num_dims (tflite op_version.cc).
FC_KEEP_DIMS_VERSION = 5


@MODES.register("dynamic")
def lower_dynamic(artifact: OnnxArtifact, *, nhwc: bool = False) -> TfliteArtifact:
    """Lower a float or weight-only QDQ ONNX model to a dynamic-range TFLite model."""
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
    matmuls = constant_matmuls_to_fc(graph)
    tables = int8_tables(graph)
    writer = ConstantWriter(graph, qdq, act_dtype="int8")
    done: dict[int, int] = {}
    quantized, kept = 0, []
    for op in graph.ops:
        op_type = graph.op_type(op)
        k = kernels.kernel(op_type)
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
        "batch_matmuls_to_fc": matmuls,
        "int8_tables": tables,
        "qparams_source": "computed" if computed or not quantized else "qdq",
        "weight_scales": {"qdq": len(done) - computed, "computed": computed},
        "stateful_tensors": float_tflite.facts.get("stateful_tensors", []),
    }
    return TfliteArtifact(
        data=data, contract=float_tflite.contract, mode="dynamic", source=source, facts=facts
    )


def constant_matmuls_to_fc(graph: Graph) -> int:
    """Rewrite each BATCH_MATMUL x·W with a float constant W into FULLY_CONNECTED(x, Wᵀ).

    W must be (..., K, N) with every leading dim 1 and x of at least W's rank, so that the
    output shape (x's leading dims, N) is the same; adj_x must be off (adj_y W is already
    [N, K]). A constant shared by several matmuls is transposed once. Returns the count.
    """
    transposed: dict[int, int] = {}
    count = 0
    for i, op in enumerate(graph.ops):
        if graph.op_type(op) != "BATCH_MATMUL":
            continue
        x_idx, w_idx = int(op.inputs[0]), int(op.inputs[1])
        w = graph.constant(w_idx)
        options = op.builtinOptions
        if w is None or graph.tensor(w_idx).type != TYPE_CODES["float"] or w.ndim < 2:
            continue
        if options.adjX or any(d != 1 for d in w.shape[:-2]):
            continue
        if len(graph.tensor(x_idx).shape) < w.ndim:
            continue
        if w_idx not in transposed:
            kn = w.reshape(w.shape[-2:])
            nk = np.ascontiguousarray(kn if options.adjY else kn.T)
            transposed[w_idx] = graph.add_tensor(
                graph.name(w_idx), nk.shape, TYPE_CODES["float"], data=nk
            )
        fc = graph.new_op(
            "FULLY_CONNECTED",
            [x_idx, transposed[w_idx], -1],
            [int(t) for t in op.outputs],
            FC_KEEP_DIMS_VERSION,
        )
        fc.builtinOptions.keepNumDims = True
        graph.ops[i] = fc
        count += 1
    return count


def int8_tables(graph: Graph) -> list[dict[str, Any]]:
    """Store each GATHER's float constant table (≥ MIN_TABLE_ELEMENTS) as int8 per row.

    The table becomes an int8 constant (symmetric, one scale per row: each embedding keeps its
    own range) feeding a DEQUANTIZE placed before the first GATHER that reads it. Returns one
    {"tensor", "shape"} entry per table.
    """
    dequantized: dict[int, int] = {}
    done = []
    for op in list(graph.ops):
        if graph.op_type(op) != "GATHER":
            continue
        t = int(op.inputs[0])
        table = graph.constant(t)
        if table is None or graph.tensor(t).type != TYPE_CODES["float"]:
            continue
        if table.size < MIN_TABLE_ELEMENTS or table.ndim < 1:
            continue
        if t not in dequantized:
            q, scale, zero = quantize_weight(table, 0)
            name = graph.name(t)
            shape = graph.tensor(t).shape
            quant = quantization(scale, zero, axis=0)
            q_idx = graph.add_tensor(name + "_int8", shape, TYPE_CODES["int8"], data=q, quant=quant)
            f_idx = graph.add_tensor(name, shape, TYPE_CODES["float"])
            dq = graph.new_op("DEQUANTIZE", [q_idx], [f_idx], DEQUANTIZE_PER_CHANNEL_VERSION)
            graph.ops.insert(graph.ops.index(op), dq)
            dequantized[t] = f_idx
            done.append({"tensor": name, "shape": [int(d) for d in shape]})
        op.inputs[0] = dequantized[t]
    return done
