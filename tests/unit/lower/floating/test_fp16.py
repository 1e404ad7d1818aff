"""fp16 lowering: float16 weights behind DEQUANTIZE ops, float32 I/O and compute."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch import nn

from bridge.artifact import OnnxArtifact, TfliteArtifact
from bridge.lower import lower
from bridge.lower.floating.fp16 import MIN_ELEMENTS, to_float16
from bridge.runtime import tflite_io
from bridge.runtime.tolerances import FP16_MIN_SQNR_DB, FP32_MIN_SQNR_DB

#: TFLite's float16 mode halves the weights; everything else (graph, int32 constants) is small.
MAX_SIZE_RATIO = 0.6

FLOAT16 = tflite_io.DTYPE_CODES[np.dtype(np.float16)]
FLOAT32 = tflite_io.DTYPE_CODES[np.dtype(np.float32)]
INT32 = tflite_io.DTYPE_CODES[np.dtype(np.int32)]


def _constants(data: bytes, dtype_code: int) -> dict[str, np.ndarray]:
    model = tflite_io.load(data)
    found = {}
    for t in model.subgraphs[0].tensors:
        value = tflite_io.buffer_array(model, t)
        if t.type == dtype_code and value is not None:
            found[tflite_io.tensor_name(t)] = value
    return found


def test_wide_net_has_over_100k_params(wide_art: OnnxArtifact) -> None:
    n = sum(int(np.prod(i.dims)) for i in wide_art.model.graph.initializer)
    assert n >= 100_000, n


def test_fp16_runs_and_matches_ort(wide_art, wide_fp32, wide_fp16, tools) -> None:
    assert wide_fp16.mode == "fp16"
    assert tools.io(wide_fp16.data) == tools.contract_io(wide_art.contract)  # float32 I/O
    fp32 = tools.sqnr(wide_art, wide_fp32)
    fp16 = tools.sqnr(wide_art, wide_fp16)
    assert min(fp32.values()) >= FP32_MIN_SQNR_DB, fp32
    assert min(fp16.values()) >= FP16_MIN_SQNR_DB, fp16
    # Rounding weights to float16 must cost something, or the weights were not converted.
    assert max(fp16.values()) < min(fp32.values()), (fp16, fp32)


def test_fp16_size(wide_fp32: TfliteArtifact, wide_fp16: TfliteArtifact) -> None:
    ratio = wide_fp16.size_bytes / wide_fp32.size_bytes
    assert ratio <= MAX_SIZE_RATIO, (wide_fp16.size_bytes, wide_fp32.size_bytes)


def test_fp16_structure(wide_fp32: TfliteArtifact, wide_fp16: TfliteArtifact) -> None:
    ops16 = Counter(tflite_io.op_histogram(wide_fp16.data))
    ops32 = Counter(tflite_io.op_histogram(wide_fp32.data))
    halves = _constants(wide_fp16.data, FLOAT16)
    # One DEQUANTIZE per float16 weight (4 layers × weight + bias), the rest of the graph unchanged.
    assert ops16["DEQUANTIZE"] == len(halves) == wide_fp16.facts["float16"]["weights"] == 8
    assert ops16 - Counter({"DEQUANTIZE": ops16["DEQUANTIZE"]}) == ops32
    assert wide_fp16.facts["op_counts"] == dict(sorted(ops16.items()))
    # Large float32 constants are gone; the float16 values are the float32 ones rounded.
    floats32 = _constants(wide_fp32.data, FLOAT32)
    left = {n: v for n, v in _constants(wide_fp16.data, FLOAT32).items() if v.size >= MIN_ELEMENTS}
    assert left == {}
    for name, half in halves.items():
        ref = floats32[name.removesuffix("_fp16")]
        np.testing.assert_array_equal(half, ref.astype(np.float16))
    # Integer constants (shapes, perms, axes) are untouched.
    ints32, ints16 = _constants(wide_fp32.data, INT32), _constants(wide_fp16.data, INT32)
    assert ints32.keys() == ints16.keys()
    for name, value in ints32.items():
        np.testing.assert_array_equal(ints16[name], value)


def test_dequantize_feeds_the_weights(wide_fp16: TfliteArtifact) -> None:
    model = tflite_io.load(wide_fp16.data)
    sg = model.subgraphs[0]
    readers = {int(i) for op in sg.operators for i in op.inputs if i >= 0}
    for op in sg.operators:
        if tflite_io.op_name(model, op) == "DEQUANTIZE":
            src, dst = sg.tensors[op.inputs[0]], sg.tensors[op.outputs[0]]
            assert (src.type, dst.type) == (FLOAT16, FLOAT32)
            assert tflite_io.buffer_array(model, dst) is None
            assert int(op.outputs[0]) in readers


class _BigConstant(nn.Module):
    """Adds a constant beyond float16's range (like a -1e9 attention mask) and a normal one."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mask", torch.full((1, 32), -1e9).index_fill(1, torch.arange(8), 0))
        self.fc = nn.Linear(32, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.fc(x) + self.mask, -1)


def test_out_of_range_constants_stay_float32(tools) -> None:
    art = tools.export(_BigConstant(), [("x", (1, 32), "plain")], [("p", "plain")])
    tfl = lower(art, mode="fp16")
    kept = tfl.facts["float16"]["kept_float32"]
    assert len(kept) == 1, kept
    assert np.isfinite(_constants(tfl.data, FLOAT32)[kept[0]]).all()
    sqnr = tools.sqnr(art, tfl)
    assert min(sqnr.values()) >= FP16_MIN_SQNR_DB, sqnr


def test_small_constants_stay_float32(wide_fp32: TfliteArtifact) -> None:
    everything, stats = to_float16(wide_fp32.data, min_elements=10**9)
    assert stats.weights == 0
    assert "DEQUANTIZE" not in tflite_io.op_histogram(everything)


@pytest.mark.slow
def test_mobilenet_v2_fp16(tools) -> None:
    import io

    import onnx

    import models
    from bridge.contract import IOContract

    module, example = models.get("mobilenet_v2")
    info = models.info("mobilenet_v2")
    buf = io.BytesIO()
    torch.onnx.export(
        module,
        example,
        buf,
        input_names=info.input_names,
        output_names=info.output_names,
        opset_version=17,
        dynamo=False,
    )
    art = OnnxArtifact(onnx.load_from_string(buf.getvalue()), IOContract(info.inputs, info.outputs))
    fp32, fp16 = lower(art, mode="fp32"), lower(art, mode="fp16")
    assert fp16.size_bytes / fp32.size_bytes <= MAX_SIZE_RATIO
    sqnr = tools.sqnr(art, fp16)
    assert min(sqnr.values()) >= FP16_MIN_SQNR_DB, sqnr
