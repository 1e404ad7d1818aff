"""Dynamic range on a transformer's layers: constant BATCH_MATMULs become hybrid FULLY_CONNECTED
ops and an embedding table is stored int8 behind a DEQUANTIZE."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from bridge.artifact import OnnxArtifact, TfliteArtifact
from bridge.contract import IOContract, TensorSpec
from bridge.lower import lower
from bridge.lower.integer import kernels
from bridge.lower.integer.dynamic import MIN_TABLE_ELEMENTS, constant_matmuls_to_fc, int8_tables
from bridge.lower.integer.weight_only import DEQUANTIZE_PER_CHANNEL_VERSION
from bridge.lower.tflite_graph import Graph
from bridge.quantize import QuantConfig, quantize
from bridge.runtime import tflite_io
from bridge.runtime.metrics import sqnr_db
from bridge.runtime.runners import LiteRTRunner, OrtRunner

VOCAB, DIM, SEQ = 300, 32, 12
#: Rewriting x·W as FULLY_CONNECTED(x, Wᵀ) changes at most the float summation order
#: (measured: bit-identical outputs).
REWRITE_MIN_SQNR_DB = 100.0
#: Int8 weights and the hybrid kernels' on-the-fly int8 inputs on this block: measured 45 dB.
MIN_SQNR_DB = 38.0


class Block(nn.Module):
    """Embedding, a feed-forward block on [batch, tokens, features] with a residual, mean."""

    def __init__(self, vocab: int = VOCAB) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, DIM)
        self.up = nn.Linear(DIM, 2 * DIM)
        self.down = nn.Linear(2 * DIM, DIM)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        x = x + self.down(nn.functional.gelu(self.up(x)))
        return x.mean(1)


def _artifact(vocab: int) -> OnnxArtifact:
    torch.manual_seed(0)
    buf = io.BytesIO()
    ids = torch.zeros(1, SEQ, dtype=torch.int64)
    torch.onnx.export(
        Block(vocab).eval(), (ids,), buf, opset_version=17, dynamo=False,
        input_names=["ids"], output_names=["y"],
    )  # fmt: skip
    contract = IOContract(
        (TensorSpec("ids", (1, SEQ), "int64"),), (TensorSpec("y", (1, DIM), "float32"),)
    )
    return OnnxArtifact(onnx.load_from_string(buf.getvalue()), contract, stage="passes")


def _feeds(vocab: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [{"ids": rng.integers(0, vocab, (1, SEQ)).astype(np.int64)} for _ in range(4)]


def _run(data: bytes, art: TfliteArtifact, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    runner = LiteRTRunner(data, art.contract)
    return np.concatenate([runner.run(f)["y"] for f in feeds])


def _ops(data: bytes) -> list[tuple[str, object, object]]:
    model = tflite_io.load(data)
    return [(tflite_io.op_name(model, op), op, model) for op in model.subgraphs[0].operators]


@pytest.fixture(scope="module")
def block() -> OnnxArtifact:
    return _artifact(VOCAB)


@pytest.fixture(scope="module")
def float_tflite(block: OnnxArtifact) -> TfliteArtifact:
    return lower(block, mode="fp32")


def _constant_matmuls(data: bytes) -> int:
    n = 0
    for name, op, model in _ops(data):
        w = model.subgraphs[0].tensors[int(op.inputs[1])] if name == "BATCH_MATMUL" else None
        n += w is not None and tflite_io.buffer_array(model, w) is not None
    return n


def _rewritten(data: bytes, *, adj_y: bool = False) -> tuple[bytes, int]:
    """The float TFLite after constant_matmuls_to_fc (with its weights first stored as
    [N, K] and adj_y set, when `adj_y`), and the rewrite count."""
    model = tflite_io.load(data)
    graph = Graph(model)
    if adj_y:
        for op in graph.ops:
            if graph.op_type(op) == "BATCH_MATMUL" and graph.is_constant(int(op.inputs[1])):
                w = graph.constant(int(op.inputs[1]))
                new = graph.add_tensor("w_t", w.shape[::-1], 0, data=np.ascontiguousarray(w.T))
                op.inputs[1] = new
                op.builtinOptions.adjY = True
    count = constant_matmuls_to_fc(graph)
    graph.commit()
    return tflite_io.save(model), count


def test_float_lowering_has_constant_batch_matmuls(float_tflite: TfliteArtifact) -> None:
    assert _constant_matmuls(float_tflite.data) == 2  # the precondition of the tests below


@pytest.mark.parametrize("adj_y", [False, True])
def test_matmul_to_fc_computes_the_same(float_tflite: TfliteArtifact, adj_y: bool) -> None:
    feeds = _feeds(VOCAB)
    before = _run(float_tflite.data, float_tflite, feeds)
    data, count = _rewritten(float_tflite.data, adj_y=adj_y)
    assert count == 2 and _constant_matmuls(data) == 0
    fcs = [op for name, op, _ in _ops(data) if name == "FULLY_CONNECTED"]
    assert len(fcs) == 2 and all(op.builtinOptions.keepNumDims for op in fcs)
    assert sqnr_db(before, _run(data, float_tflite, feeds)) >= REWRITE_MIN_SQNR_DB


@pytest.fixture(scope="module")
def dynamic(block: OnnxArtifact) -> TfliteArtifact:
    return lower(quantize(block, QuantConfig(mode="dynamic")), mode="dynamic")


def test_linear_weights_are_hybrid_fully_connected(dynamic: TfliteArtifact) -> None:
    assert dynamic.facts["batch_matmuls_to_fc"] == 2
    assert dynamic.facts["quantized_ops"] == 2 and dynamic.facts["qparams_source"] == "qdq"
    fcs = [(op, m) for name, op, m in _ops(dynamic.data) if name == "FULLY_CONNECTED"]
    assert len(fcs) == 2
    for op, model in fcs:
        sg = model.subgraphs[0]
        x, w = sg.tensors[int(op.inputs[0])], sg.tensors[int(op.inputs[1])]
        assert (x.type, w.type, sg.tensors[int(op.outputs[0])].type) == (0, 9, 0)
        assert w.quantization.quantizedDimension == 0 and len(w.quantization.scale) == w.shape[0]
        assert op.builtinOptions.asymmetricQuantizeInputs and op.builtinOptions.keepNumDims
        assert (
            model.operatorCodes[op.opcodeIndex].version == kernels.kernel("FULLY_CONNECTED").hybrid
        )


def test_embedding_table_is_int8_per_row_behind_dequantize(dynamic: TfliteArtifact) -> None:
    assert dynamic.facts["int8_tables"] == [
        {"tensor": dynamic.facts["int8_tables"][0]["tensor"], "shape": [VOCAB, DIM]}
    ]
    ops = _ops(dynamic.data)
    names = [name for name, _, _ in ops]
    assert names.count("DEQUANTIZE") == 1 and names.index("DEQUANTIZE") < names.index("GATHER")
    _, dq, model = ops[names.index("DEQUANTIZE")]
    _, gather, _ = ops[names.index("GATHER")]
    sg = model.subgraphs[0]
    table = sg.tensors[int(dq.inputs[0])]
    assert table.type == 9 and list(table.shape) == [VOCAB, DIM]
    assert table.quantization.quantizedDimension == 0 and len(table.quantization.scale) == VOCAB
    assert model.operatorCodes[dq.opcodeIndex].version == DEQUANTIZE_PER_CHANNEL_VERSION
    assert int(gather.inputs[0]) == int(dq.outputs[0])


def test_dynamic_is_close_to_float_and_smaller(
    block: OnnxArtifact, float_tflite: TfliteArtifact, dynamic: TfliteArtifact
) -> None:
    feeds = _feeds(VOCAB)
    ort = OrtRunner(block.model, block.contract)
    ref = np.concatenate([ort.run(f)["y"] for f in feeds])
    got = _run(dynamic.data, dynamic, feeds)
    assert MIN_SQNR_DB <= sqnr_db(ref, got) < 100.0  # < 100: really int8
    # embedding 300×32 and 2 × 2048 linear weights: 4 bytes → 1 byte each (measured 0.38)
    assert dynamic.size_bytes < 0.4 * float_tflite.size_bytes


def test_small_tables_stay_float() -> None:
    vocab = MIN_TABLE_ELEMENTS // DIM - 1
    art = lower(_artifact(vocab), mode="fp32")
    graph = Graph(tflite_io.load(art.data))
    assert int8_tables(graph) == []
    assert all(graph.op_type(op) != "DEQUANTIZE" for op in graph.ops)
