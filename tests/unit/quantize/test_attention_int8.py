"""int8 for attention and sequence models: symmetric MatMul inputs, fused GELU and Linear
patterns, the float-fallback rules, and QDQ ORT ⇄ LiteRT parity on the result."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from bridge.artifact import OnnxArtifact, TfliteArtifact
from bridge.lower.integer import lower_int8
from bridge.quantize import QuantConfig, quantize, rules
from bridge.quantize.patterns import find_patterns
from bridge.quantize.plan import ABSORBED, constant_values
from bridge.runtime import tflite_io, tolerances
from bridge.runtime.feeds import random_feeds
from bridge.runtime.metrics import lsb_error, sqnr_db
from bridge.runtime.runners import LiteRTRunner, OrtRunner
from models._layers import EncoderBlock
from models.vit import ViTTiny

from .conftest import activation_qparams, export, initializers, qdq_sqnr_over, random_samples

CALIBRATION = 16
SAMPLES = 4
#: QDQ ORT and LiteRT run the same integer model; a requantization differs by at most one step
#: at a rounding tie (fixed-point vs float multipliers), and these nets are shallow.
P99_LSB = 1.0
#: QDQ ⇄ float SQNR of the encoder block: measured 40 dB, 36 dB with its residual Adds int8.
BLOCK_FLOOR_DB = 30.0
#: A two-block ViT with a class token: measured 32.5 dB with the residual stream float, 20.6 dB
#: with every Add and the class-token Concat int8 (the zoo's vit_tiny: 29 vs 13 dB).
VIT_FLOOR_DB = 25.0


class Block(nn.Module):
    """A pre-LN encoder block (attention, GELU MLP, residual adds) and a final LayerNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.block = EncoderBlock(16, 2)
        self.norm = nn.LayerNorm(16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.block(x))


class BatchMatMul(nn.Module):
    """Two activations multiplied; the right one is shifted so its range is lopsided."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.matmul(a, b + 1.5)


class ClassToken(nn.Module):
    """A tiny learned token concatenated before projected tokens, then a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.cls = nn.Parameter(0.01 * torch.randn(1, 1, 8))
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = 4.0 * self.proj(x)
        return self.head(torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], 1))


class TwoBranches(nn.Module):
    """Two Linear branches of similar range concatenated, then a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.head = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.a(x), 0.5 * self.b(x)], 1))


def quantized(art: OnnxArtifact, **config: object) -> OnnxArtifact:
    return quantize(
        art, QuantConfig(mode="int8", **config), random_samples(art, CALIBRATION, seed=7)
    )


@pytest.fixture(scope="module")
def block() -> OnnxArtifact:
    torch.manual_seed(0)
    return export(Block(), (1, 6, 16))


@pytest.fixture(scope="module")
def block_qdq(block: OnnxArtifact) -> OnnxArtifact:
    return quantized(block)


@pytest.fixture(scope="module")
def block_tflite(block_qdq: OnnxArtifact) -> TfliteArtifact:
    return lower_int8(block_qdq)


def ops(art: TfliteArtifact) -> list[tuple[str, list[int], list[int]]]:
    """(op type, TFLite input types, output types) per operator."""
    model = tflite_io.load(art.data)
    sg = model.subgraphs[0]
    return [
        (
            tflite_io.op_name(model, op),
            [sg.tensors[int(t)].type if t >= 0 else -1 for t in op.inputs],
            [sg.tensors[int(t)].type for t in op.outputs],
        )
        for op in sg.operators
    ]


def qdq_vs_tflite(qdq: OnnxArtifact, art: TfliteArtifact) -> tuple[float, float]:
    """(worst SQNR, worst p99 error in output LSB) over SAMPLES random inputs, one output."""
    out = qdq.contract.output_names[0]
    scale = qdq.facts["quantization"]["tensors"][out]["scale"][0]
    ort = OrtRunner(qdq.model, qdq.contract)
    lite = LiteRTRunner(art.data, art.contract, user_contract=qdq.contract)
    worst_sqnr, worst_p99 = np.inf, 0.0
    for seed in range(SAMPLES):
        feeds = random_feeds(qdq.contract, seed=50 + seed)
        ref, got = ort.run(feeds)[out], lite.run(feeds)[out]
        worst_sqnr = min(worst_sqnr, sqnr_db(ref, got))
        worst_p99 = max(worst_p99, lsb_error(ref, got, scale)[1])
    return worst_sqnr, worst_p99


def float_vs_qdq(art: OnnxArtifact, qdq: OnnxArtifact, *, token: int | None = None) -> float:
    """SQNR of the QDQ output against the float one (on one token of axis 1 if given)."""
    return qdq_sqnr_over(art, qdq, random_samples(art, SAMPLES, seed=99), token=token)


# ---- MatMul of two activations ------------------------------------------------------------------
def test_matmul_right_input_is_symmetric_and_runs_int8() -> None:
    torch.manual_seed(0)
    art = export(BatchMatMul(), (2, 5, 8), (2, 8, 4))
    qdq = quantized(art)
    mm = next(n for n in qdq.model.graph.node if n.op_type == "MatMul")
    shifted = next(n.output[0] for n in qdq.model.graph.node if n.op_type == "Add")
    qp = activation_qparams(qdq.model)
    assert qp[shifted][1] == 0, qp[shifted]  # zero point 0 on the right input
    assert qp["x0"][1] != 0  # the left input stays asymmetric
    lo, hi = qdq.facts["quantization"]["tensors"][shifted]["range"]
    assert lo < 0 < hi and hi > 1.5 * -lo  # lopsided: asymmetric would have moved the zero
    assert mm.input[1].endswith("dequantized")
    tfl = lower_int8(qdq)
    kinds = {name: (ins, outs) for name, ins, outs in ops(tfl)}
    assert kinds["BATCH_MATMUL"] == ([9, 9], [9]), kinds  # int8 in XNNPACK, not float
    assert tfl.facts["float_ops"] == []
    sqnr, p99 = qdq_vs_tflite(qdq, tfl)
    assert sqnr >= tolerances.INT8_VS_QDQ_MIN_SQNR_DB and p99 <= P99_LSB, (sqnr, p99)


# ---- fused patterns -----------------------------------------------------------------------------
def test_patterns_found_in_encoder_block(block: OnnxArtifact) -> None:
    matches = find_patterns(block.model.graph, constant_values(block.model))
    found = Counter(m.pattern.name for m in matches)
    assert found == {"matmul_bias": 4, "gelu_erf": 1}, found
    gelu = next(m for m in matches if m.pattern.name == "gelu_erf")
    ops_in = [block.model.graph.node[i].op_type for i in gelu.nodes]
    assert ops_in == ["Div", "Erf", "Add", "Mul", "Mul"]
    assert len(gelu.internal) == 4


def test_gelu_chain_is_one_quantized_op(block_qdq: OnnxArtifact, block_tflite: TfliteArtifact):
    graph = block_qdq.model.graph
    quantized_tensors = {n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    chain = next(p for p in block_qdq.facts["quantization"]["fused_patterns"] if "Erf" in str(p))
    producers = {n.name: n for n in graph.node}
    inside = [producers[name].output[0] for name in chain["nodes"][:-1]]
    assert not quantized_tensors.intersection(inside)  # no rounding inside the GELU
    assert chain["output"] in quantized_tensors and chain["tflite_op"] == "GELU"
    gelus = [(ins, outs) for name, ins, outs in ops(block_tflite) if name == "GELU"]
    assert gelus == [([9], [9])]
    assert block_tflite.facts["unmatched_onnx"] == []  # every QDQ tensor exists in TFLite


def test_linear_layers_have_int32_bias_and_no_rounded_product(
    block_qdq: OnnxArtifact, block_tflite: TfliteArtifact
) -> None:
    graph = block_qdq.model.graph
    inits = initializers(block_qdq.model)
    quantized_tensors = {n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    products = [n.output[0] for n in graph.node if n.op_type == "MatMul" and "qkv" in n.name]
    assert products and not quantized_tensors.intersection(products)
    bias = next(n for n in graph.node if n.op_type == "DequantizeLinear" and "qkv.bias" in n.name)
    assert inits[bias.input[0]].dtype == np.int32
    tensors = block_qdq.facts["quantization"]["tensors"]
    fact = next(v for k, v in tensors.items() if k.endswith("qkv.bias"))
    s_in = np.float32(tensors[fact["input"]]["scale"][0])
    s_w = np.asarray(tensors[fact["weight"]]["scale"], np.float32)
    assert fact["node"].endswith("qkv/Add") and np.allclose(fact["scale"], s_in * s_w, rtol=1e-6)
    fcs = [(ins, outs) for name, ins, outs in ops(block_tflite) if name == "FULLY_CONNECTED"]
    assert len(fcs) == 4 and all(f == ([9, 9, 2], [9]) for f in fcs), fcs
    assert block_tflite.facts["matmuls_as_fully_connected"] == 4


# ---- float fallbacks ----------------------------------------------------------------------------
def test_residual_stream_read_by_layernorms_stays_float(block_qdq: OnnxArtifact) -> None:
    floats = {f["node"]: f for f in block_qdq.facts["quantization"]["float_nodes"]}
    residual = [n for n in floats if n.endswith(("block/Add", "block/Add_1"))]
    assert len(residual) == 2, sorted(floats)
    assert all(floats[n]["reason"] == ABSORBED for n in residual)
    assert all("FLOAT_ABSORBED_OPS" in floats[n]["reason"] for n in residual)
    norms = [f for f in floats.values() if f["op"] == "LayerNormalization"]
    assert len(norms) == 3 and all(f["reason"] for f in norms)
    # the bias Adds of the Linear layers are FULLY_CONNECTED tails: never absorbed
    assert not [n for n in floats if n.endswith("proj/Add") or "mlp.2/Add" in n]


def test_fallbacks_help(block: OnnxArtifact, block_qdq: OnnxArtifact) -> None:
    """Quantizing the residual Adds too (the rule switched off) costs about 4 dB."""
    kept = float_vs_qdq(block, block_qdq)
    assert kept >= BLOCK_FLOOR_DB
    plain = _without_absorption(block)
    assert kept >= float_vs_qdq(block, plain) + 3.0, (kept, float_vs_qdq(block, plain))


def _without_absorption(art: OnnxArtifact, **config: object) -> OnnxArtifact:
    mp = pytest.MonkeyPatch()
    try:
        mp.setattr("bridge.quantize.plan.FLOAT_ABSORBED_OPS", frozenset())
        return quantized(art, **config)
    finally:
        mp.undo()


def test_concat_with_far_apart_ranges_is_reported() -> None:
    """A tiny class token beside wide tokens keeps a few int8 levels. Keeping the Concat float
    would not help (its int8 reader quantizes the output at the same range), so it stays int8
    and the spread is reported."""
    torch.manual_seed(0)
    art = export(ClassToken(), (1, 5, 8))
    qdq = quantized(art)
    facts = qdq.facts["quantization"]
    assert "Concat" not in {f["op"] for f in facts["float_nodes"]}
    narrow = facts["narrow_in_shared_scale"]
    assert narrow and {n["tensor"] for n in narrow} <= {"cls", "/Expand_output_0"}, narrow
    assert all(n["ratio"] > rules.SHARED_SCALE_MAX_RATIO for n in narrow)
    assert all(n["levels"] < 256 / rules.SHARED_SCALE_MAX_RATIO for n in narrow)
    assert float_vs_qdq(art, qdq, token=0) < float_vs_qdq(art, qdq) - 10.0  # the cls row lost


def test_concat_with_similar_ranges_shares_one_scale() -> None:
    torch.manual_seed(0)
    art = export(TwoBranches(), (3, 8))
    qdq = quantized(art)
    facts = qdq.facts["quantization"]
    assert "Concat" not in {f["op"] for f in facts["float_nodes"]}
    assert any(len(g) == 3 for g in facts["shared_scale_groups"]), facts["shared_scale_groups"]
    assert facts["narrow_in_shared_scale"] == []


def test_class_token_stem_read_by_float_ops_stays_float() -> None:
    """ViT's stem: the class-token Concat and the embedding Add feed only a LayerNorm and the
    residual Add, so the stem after the patch Conv runs float and the token keeps its bits."""
    torch.manual_seed(0)
    art = export(ViTTiny(image_size=16, patch=8, dim=16, depth=2, heads=2), (1, 3, 16, 16))
    # bias correction off: on 4 samples its noise would blur the comparison of the plans
    qdq = quantized(art, bias_correction=False)
    floats = {f["node"]: f for f in qdq.facts["quantization"]["float_nodes"]}
    assert floats["/Concat_1"]["reason"] == ABSORBED, sorted(floats)
    assert floats["/Add"]["reason"] == ABSORBED
    assert qdq.facts["quantization"]["narrow_in_shared_scale"] == []
    plain = _without_absorption(art, bias_correction=False)
    kept, plain = float_vs_qdq(art, qdq), float_vs_qdq(art, plain)
    assert kept >= VIT_FLOOR_DB and kept >= plain + 6.0, (kept, plain)


# ---- the encoder block end to end ---------------------------------------------------------------
def test_block_int8_parity(block_qdq: OnnxArtifact, block_tflite: TfliteArtifact) -> None:
    kinds = Counter(name for name, _, _ in ops(block_tflite))
    assert kinds["BATCH_MATMUL"] == 2 and kinds["SOFTMAX"] == 1, kinds
    int8_matmuls = [i for name, i, _ in ops(block_tflite) if name == "BATCH_MATMUL"]
    assert all(t == [9, 9] for t in int8_matmuls)
    sqnr, p99 = qdq_vs_tflite(block_qdq, block_tflite)
    assert sqnr >= tolerances.INT8_VS_QDQ_MIN_SQNR_DB and p99 <= P99_LSB, (sqnr, p99)


def test_float_output_goes_through_int8(block_qdq: OnnxArtifact, block_tflite: TfliteArtifact):
    """The final LayerNorm is float, but the model's output is int8 in both runtimes."""
    out = block_qdq.contract.output_names[0]
    dq = next(n for n in block_qdq.model.graph.node if out in n.output)
    assert dq.op_type == "DequantizeLinear"
    model = tflite_io.load(block_tflite.data)
    sg = model.subgraphs[0]
    last = next(op for op in sg.operators if int(sg.outputs[0]) in op.outputs)
    assert tflite_io.op_name(model, last) == "DEQUANTIZE"
    assert sg.tensors[int(last.inputs[0])].type == 9


def test_weight_scales_survive(block_qdq: OnnxArtifact, block_tflite: TfliteArtifact) -> None:
    """Each FULLY_CONNECTED filter carries one QDQ MatMul weight's per-channel scales."""
    inits = {i.name: numpy_helper.to_array(i) for i in block_qdq.model.graph.initializer}
    qdq_scales = [
        np.asarray(inits[n.input[1]], np.float64)
        for n in block_qdq.model.graph.node
        if n.op_type == "DequantizeLinear" and inits.get(n.input[0], np.zeros(0)).dtype == np.int8
    ]
    model = tflite_io.load(block_tflite.data)
    sg = model.subgraphs[0]
    for op in sg.operators:
        if tflite_io.op_name(model, op) != "FULLY_CONNECTED":
            continue
        got = np.asarray(sg.tensors[int(op.inputs[1])].quantization.scale, np.float64)
        assert any(s.shape == got.shape and np.allclose(s, got, rtol=1e-6) for s in qdq_scales)


def test_facts_are_json(block_qdq: OnnxArtifact) -> None:
    import json

    facts = block_qdq.facts["quantization"]
    json.dumps({k: facts[k] for k in ("float_nodes", "fused_patterns")})
    assert onnx.checker.check_model(block_qdq.model) is None


def test_integer_io_quantizes_an_input_only_float_ops_read(block: OnnxArtifact) -> None:
    """The block's input feeds a LayerNorm and a float residual Add only; with int8 I/O it is
    quantized anyway, and every reader (float ones too) sees the dequantized value."""
    float_io = block_qdq_inputs(quantized(block))
    assert float_io == set()  # float32 I/O: nothing to round at the input
    qdq = quantize(
        block, QuantConfig(mode="int8", io_dtype="int8"), random_samples(block, CALIBRATION, 7)
    )
    readers = [n for n in qdq.model.graph.node if "x0" in n.input]
    assert [n.op_type for n in readers] == ["QuantizeLinear"], readers
    tfl = lower_int8(qdq)
    assert [s.dtype for s in (*tfl.contract.inputs, *tfl.contract.outputs)] == ["int8", "int8"]
    sqnr, p99 = qdq_vs_tflite(qdq, tfl)
    assert sqnr >= tolerances.INT8_VS_QDQ_MIN_SQNR_DB and p99 <= P99_LSB, (sqnr, p99)


def block_qdq_inputs(qdq: OnnxArtifact) -> set[str]:
    """Graph inputs that a QuantizeLinear reads."""
    inputs = set(qdq.contract.input_names)
    return {n.input[0] for n in qdq.model.graph.node if n.op_type == "QuantizeLinear"} & inputs


class MaskedSoftmax(nn.Module):
    """Scores plus an additive −10000 attention mask, then softmax (BERT's masking)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.proj(x)
        mask = torch.zeros_like(scores)
        mask[..., 4:] = -10000.0
        return torch.softmax(scores + mask, dim=-1)


def test_softmax_input_range_is_cut_to_what_softmax_can_resolve() -> None:
    art = export(MaskedSoftmax().eval(), (1, 4, 8))
    qdq = quantize(art, QuantConfig(mode="int8", observer="minmax"), random_samples(art, 8))
    softmax_in = next(n.input[0] for n in qdq.model.graph.node if n.op_type == "Softmax")
    tensors = qdq.facts["quantization"]["tensors"]
    entry = next(e for e in tensors.values() if e.get("dq") == softmax_in)
    assert entry["range"][1] - entry["range"][0] <= rules.SOFTMAX_INPUT_SPAN * 1.001
    assert entry["observed_range"][0] <= -9000  # the mask was seen, and cut
    out = art.contract.output_names[0]
    feeds = [
        dict(zip(art.contract.input_names, f, strict=True)) for f in random_samples(art, 4, seed=9)
    ]
    ref = np.concatenate([OrtRunner(art.model, art.contract).run(f)[out] for f in feeds])
    got = np.concatenate([OrtRunner(qdq.model, qdq.contract).run(f)[out] for f in feeds])
    assert sqnr_db(ref, got) >= BLOCK_FLOOR_DB
