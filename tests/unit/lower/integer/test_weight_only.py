"""int8 lowering of BERT-like pieces: weight-only linear layers and int8 embedding tables (int8
constants read through DEQUANTIZE), the masked-softmax Add in LiteRT's builtin kernels, and the
inputs the value matching runs on."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.artifact import OnnxArtifact, TfliteArtifact
from bridge.contract import IOContract, TensorSpec
from bridge.lower.integer import lower_int8
from bridge.lower.integer.match import match_feeds
from bridge.runtime import tflite_io, tolerances
from bridge.runtime.metrics import sqnr_db
from bridge.runtime.runners import OrtRunner
from bridge.verify.structure import audit_integer
from tests.unit.quantize.transformer_models import (
    embedder,
    masked_attention,
    post_ln,
    quantized,
    samples,
)

FLOAT32, INT8 = 0, 9


def _run_tflite(data: bytes, art: OnnxArtifact, *, builtin: bool) -> list[np.ndarray]:
    """The .tflite's output on the test samples, with LiteRT's builtin kernels or XNNPACK."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kw = {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    interp = Interpreter(model_content=data, num_threads=1, **(kw if builtin else {}))
    interp.allocate_tensors()
    ins = {d["name"]: d["index"] for d in interp.get_input_details()}
    out = interp.get_output_details()[0]["index"]
    outs = []
    for sample in samples(art, 4, seed=99):
        for name, value in zip(art.contract.input_names, sample, strict=True):
            interp.set_tensor(ins[name], value)
        interp.invoke()
        outs.append(interp.get_tensor(out).copy())
    return outs


def qdq_vs_tflite(qdq: OnnxArtifact, tfl: TfliteArtifact, *, builtin: bool = False) -> float:
    ort = OrtRunner(qdq.model, qdq.contract)
    names = qdq.contract.input_names
    ref = [ort.run(dict(zip(names, s, strict=True)))["y"] for s in samples(qdq, 4, seed=99)]
    got = _run_tflite(tfl.data, qdq, builtin=builtin)
    return sqnr_db(np.concatenate(ref), np.concatenate(got))


def _report(qdq: OnnxArtifact, tfl: TfliteArtifact) -> dict:
    return {"mode": "int8", "lowering": tfl.facts, "quantization": qdq.facts["quantization"]}


def _dequantized_constants(tfl: TfliteArtifact) -> dict[int, object]:
    """Float tensor index → the int8 constant tensor a DEQUANTIZE makes it from."""
    model = tflite_io.load(tfl.data)
    sg = model.subgraphs[0]
    return {
        int(op.outputs[0]): sg.tensors[int(op.inputs[0])]
        for op in sg.operators
        if tflite_io.op_name(model, op) == "DEQUANTIZE"
        and tflite_io.buffer_array(model, sg.tensors[int(op.inputs[0])]) is not None
    }


def test_weight_only_linear_reads_int8_filter() -> None:
    qdq = quantized(post_ln(50.0))
    tfl = lower_int8(qdq)
    model = tflite_io.load(tfl.data)
    sg = model.subgraphs[0]
    fcs = [op for op in sg.operators if tflite_io.op_name(model, op) == "FULLY_CONNECTED"]
    float_fcs = [op for op in fcs if sg.tensors[int(op.inputs[0])].type == FLOAT32]
    assert len(fcs) == 2 and len(float_fcs) == 1  # fc1 int8, fc2 float on int8 weights
    filt = _dequantized_constants(tfl)[int(float_fcs[0].inputs[1])]
    assert filt.type == INT8 and list(filt.shape) == [16, 32]
    want = qdq.facts["quantization"]["tensors"]
    w_scales = next(v["scale"] for v in want.values() if v.get("node") == "/fc2/MatMul")
    np.testing.assert_allclose(filt.quantization.scale, w_scales, rtol=1e-6)
    assert [f["op"] for f in tfl.facts["int8_stored_float_weights"]] == ["FULLY_CONNECTED"]
    audit = audit_integer(tfl.data, _report(qdq, tfl))
    assert audit["problems"] == [] and audit["ops"].get("float_FULLY_CONNECTED") == 1, audit
    sqnr = qdq_vs_tflite(qdq, tfl)
    assert sqnr >= tolerances.INT8_VS_QDQ_MIN_SQNR_DB, sqnr


def test_embedding_table_is_stored_int8() -> None:
    qdq = quantized(embedder())
    tfl = lower_int8(qdq)
    model = tflite_io.load(tfl.data)
    sg = model.subgraphs[0]
    gather = next(op for op in sg.operators if tflite_io.op_name(model, op) == "GATHER")
    table = _dequantized_constants(tfl)[int(gather.inputs[0])]
    assert table.type == INT8 and list(table.shape) == [50, 16]
    assert len(table.quantization.scale) == 50 and table.quantization.quantizedDimension == 0
    constants = [(t, tflite_io.buffer_array(model, t)) for t in sg.tensors]
    big_floats = [t for t, a in constants if t.type == FLOAT32 and a is not None and a.size >= 800]
    assert big_floats == []  # the 50 × 16 table is in the file as int8 only
    assert audit_integer(tfl.data, _report(qdq, tfl))["problems"] == []
    sqnr = qdq_vs_tflite(qdq, tfl)
    assert sqnr >= tolerances.INT8_VS_QDQ_MIN_SQNR_DB, sqnr


@pytest.mark.parametrize("builtin", [True, False], ids=["builtin", "xnnpack"])
def test_masked_softmax_in_both_kernel_sets(builtin: bool) -> None:
    """LiteRT's builtin int8 ADD narrows its rescaled sum to int16. Here the −10000 mask is
    63000 softmax-input steps: at its full range masked keys wrapped to +127 and took all the
    attention (1.0 dB); cut to what reaches the output (rules.REACH_CUT_OPS), 36.9 dB.
    XNNPACK was right either way."""
    qdq = quantized(masked_attention(lead=2.0))
    tfl = lower_int8(qdq)
    sqnr = qdq_vs_tflite(qdq, tfl, builtin=builtin)
    assert sqnr >= tolerances.INT8_VS_QDQ_MIN_SQNR_DB, sqnr


def test_match_feeds_keep_integers_to_0_and_1() -> None:
    contract = IOContract(
        (TensorSpec("ids", (1, 64), "int64", "plain"), TensorSpec("x", (1, 8), "float32", "plain")),
        (TensorSpec("y", (1, 8), "float32", "plain"),),
    )
    feeds = match_feeds(contract, seed=3)
    assert set(np.unique(feeds["ids"])) == {0, 1} and feeds["ids"].dtype == np.int64
    assert feeds["x"].dtype == np.float32 and feeds["x"].std() > 0.5
