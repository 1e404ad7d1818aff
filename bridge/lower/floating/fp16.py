"""fp16 lowering: float16 weights with float32 compute, as TFLite's float16 post-training mode.

The fp32 .tflite is rewritten: every float32 constant with at least `MIN_ELEMENTS` elements
(weights, biases, other large constants) is stored as float16, and a DEQUANTIZE op
(float16 → float32) placed at the start of the graph restores it for its consumers:

    w_fp16 [float16 constant] ─DEQUANTIZE→ w [float32, the tensor the ops already read]

Inputs, outputs, activations and arithmetic stay float32, so every kernel runs unchanged
(XNNPACK folds the DEQUANTIZE of a static weight at load time) and the file is about half the
size. Integer constants (shapes, perms, axes) are left alone, and so is any float constant whose
values exceed float16's range (±65504, e.g. a -1e9 attention mask), which would become ±inf.

Why not onnx2tf's own `*_float16.tflite`: onnx2tf 2.6.9 makes *every* float tensor float16,
including activations and the model's inputs and outputs. LiteRT's builtin CPU kernels have no
float16 arithmetic path, so the interpreter rejects it at allocation ("CONV_2D failed to
prepare": conv.cc requires a float32/int8/uint8/int16 input).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from bridge.artifact import OnnxArtifact, TfliteArtifact
from bridge.lower import tflite_graph
from bridge.lower.floating import lower_float, op_facts, reject_qdq
from bridge.lower.modes import MODES
from bridge.runtime import tflite_io

log = logging.getLogger(__name__)

#: Constants smaller than this stay float32: scalars such as a LayerNorm epsilon or a ×0.5
#: cost a DEQUANTIZE op each and save nothing.
MIN_ELEMENTS = 16
#: The largest finite float16.
FP16_MAX = float(np.finfo(np.float16).max)
#: DEQUANTIZE version 3 accepts float16 (and int16) inputs.
DEQUANTIZE_VERSION = 3


@dataclass
class Float16Stats:
    """What the float16 rewrite did."""

    weights: int = 0
    float16_bytes: int = 0
    kept_float32: list[str] = field(default_factory=list)


@MODES.register("fp16")
def lower_fp16(artifact: OnnxArtifact, *, nhwc: bool = False) -> TfliteArtifact:
    """The "fp16" mode: the fp32 lowering with float16 weights."""
    reject_qdq(artifact, "fp16")
    base = lower_float(artifact, nhwc=nhwc)
    start = time.perf_counter()
    data, stats = to_float16(base.data)
    facts = {
        **op_facts(tflite_io.load(data)),
        "seconds": round(base.facts["seconds"] + time.perf_counter() - start, 3),
        "float16": asdict(stats),
    }
    log.info("fp16 weights: %d tensors, %d → %d bytes", stats.weights, len(base.data), len(data))
    return base.evolve(data=data, mode="fp16", facts=facts)


def to_float16(data: bytes, *, min_elements: int = MIN_ELEMENTS) -> tuple[bytes, Float16Stats]:
    """Rewrite a float32 .tflite to float16 weights + DEQUANTIZE ops; return it and stats."""
    model = tflite_io.load(data)
    sg = model.subgraphs[0]
    readers = tflite_graph.consumers(sg)
    boundary = {int(t) for t in sg.inputs} | {int(t) for t in sg.outputs}
    float32 = tflite_io.DTYPE_CODES[np.dtype(np.float32)]
    stats = Float16Stats()
    dequantize_ops = []
    for idx in range(len(sg.tensors)):
        tensor = sg.tensors[idx]
        if tensor.type != float32 or idx in boundary or tensor.isVariable or not readers.get(idx):
            continue
        value = tflite_io.buffer_array(model, tensor)
        if value is None or value.size < min_elements:
            continue
        name = tflite_io.tensor_name(tensor)
        if not np.all(np.abs(value) <= FP16_MAX):
            stats.kept_float32.append(name)
            continue
        half = tflite_graph.add_tensor(
            model,
            f"{name}_fp16",
            [int(d) for d in tensor.shape],
            np.dtype(np.float16),
            data=value.astype(np.float16),
        )
        tensor.buffer = tflite_graph.empty_buffer(model)
        dequantize_ops.append(
            tflite_graph.make_op(model, "DEQUANTIZE", [half], [idx], version=DEQUANTIZE_VERSION)
        )
        stats.weights += 1
        stats.float16_bytes += value.size * 2
    if stats.kept_float32:
        log.info("kept float32 (values beyond float16 range): %s", stats.kept_float32)
    sg.operators = dequantize_ops + list(sg.operators)
    _empty_unused_buffers(model)
    return tflite_io.save(model), stats


def _empty_unused_buffers(model: Any) -> None:
    """Free the float32 data of buffers no tensor refers to any more (indices stay valid)."""
    used = {int(t.buffer) for sg in model.subgraphs for t in sg.tensors}
    used.update(int(md.buffer) for md in model.metadata or [])
    for i, buf in enumerate(model.buffers):
        if i not in used and buf.data is not None:
            buf.data = None
