"""The TFLite rules table, and that the produced QDQ follows it."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from bridge.artifact import OnnxArtifact
from bridge.quantize import QuantConfig, quantize
from bridge.quantize.rules import FLOAT_OPS, RULES, fusable_activation, rule_for, weight_axis

from .conftest import activation_qparams, random_samples


def test_weight_axes() -> None:
    conv = rule_for("Conv")
    assert conv is not None and (conv.weight, conv.weight_axis, conv.bias) == (1, 0, 2)
    depthwise = helper.make_node("Conv", ["x", "w", "b"], ["y"], group=16)
    assert rule_for("Conv", depthwise).weight_axis == 0  # type: ignore[union-attr]
    assert rule_for("ConvTranspose").weight_axis == 1  # type: ignore[union-attr]
    gemm_t = helper.make_node("Gemm", ["a", "b", "c"], ["y"], transB=1)
    gemm = helper.make_node("Gemm", ["a", "b", "c"], ["y"])
    assert rule_for("Gemm", gemm_t).weight_axis == 0  # type: ignore[union-attr]
    assert rule_for("Gemm", gemm).weight_axis == 1  # type: ignore[union-attr]
    matmul = rule_for("MatMul")
    assert matmul is not None
    assert weight_axis(matmul, 2) == 1
    assert weight_axis(matmul, 3) is None  # TFLite BATCH_MATMUL: per-tensor only


def test_fixed_output_qparams() -> None:
    for op in ("Sigmoid", "Softmax"):
        assert RULES[op].fixed["int8"] == (1 / 256, -128)
        assert RULES[op].fixed["int16"] == (1 / 32768, 0)
    assert RULES["Tanh"].fixed["int8"] == (1 / 128, 0)
    assert RULES["Tanh"].fixed["int16"] == (1 / 32768, 0)


SAME_SCALE_OPS = (
    "MaxPool", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Pad", "Slice",
    "Gather", "Resize", "AveragePool", "GlobalAveragePool", "Concat",
)  # fmt: skip


def test_same_scale_and_float_ops() -> None:
    for op in SAME_SCALE_OPS:
        assert RULES[op].output == "same", op
    assert RULES["Concat"].share_inputs and RULES["Concat"].inputs is None
    assert RULES["Relu"].output == "own" and RULES["Clip"].output == "own"
    for op in ("LSTM", "Erf", "Div", "LayerNormalization"):
        assert RULES[op].is_float and FLOAT_OPS[op], op
    assert all(reason for reason in FLOAT_OPS.values())
    assert rule_for("SomeCustomOp") is None


def test_fusable_activations() -> None:
    consts = {"lo": np.float32(0), "six": np.float32(6), "three": np.float32(3)}
    assert fusable_activation(helper.make_node("Relu", ["x"], ["y"]), consts)
    assert fusable_activation(helper.make_node("Clip", ["x", "lo", "six"], ["y"]), consts)
    assert not fusable_activation(helper.make_node("Clip", ["x", "lo", "three"], ["y"]), consts)
    assert not fusable_activation(helper.make_node("Clip", ["x", "lo", "dyn"], ["y"]), consts)
    assert not fusable_activation(helper.make_node("Sigmoid", ["x"], ["y"]), consts)


@pytest.fixture(scope="module")
def cnn_q(cnn: OnnxArtifact) -> OnnxArtifact:
    return quantize(cnn, QuantConfig(), random_samples(cnn, 16))


def test_concat_inputs_and_output_share_one_scale(cnn_q: OnnxArtifact) -> None:
    concat = next(n for n in cnn_q.model.graph.node if n.op_type == "Concat")
    qp = activation_qparams(cnn_q.model)
    producers = {o: n for n in cnn_q.model.graph.node for o in n.output}
    float_inputs = [producers[t].input[0] for t in concat.input]  # DequantizeLinear ← Quantize
    float_inputs = [producers[t].input[0] for t in float_inputs]
    shared = {qp[t] for t in [*float_inputs, concat.output[0]]}
    assert len(shared) == 1, shared
    # the merged range covers both branches
    tensors = cnn_q.facts["quantization"]["tensors"]
    lo, hi = tensors[concat.output[0]]["range"]
    for t in float_inputs:
        assert lo <= tensors[t]["observed_range"][0] and hi >= tensors[t]["observed_range"][1]


def test_maxpool_keeps_its_input_scale(cnn_q: OnnxArtifact) -> None:
    pool = next(n for n in cnn_q.model.graph.node if n.op_type == "MaxPool")
    producers = {o: n for n in cnn_q.model.graph.node for o in n.output}
    float_in = producers[producers[pool.input[0]].input[0]].input[0]
    qp = activation_qparams(cnn_q.model)
    assert qp[float_in] == qp[pool.output[0]]


def test_conv_relu_pairs_are_fused(cnn_q: OnnxArtifact) -> None:
    quantized = set(activation_qparams(cnn_q.model))
    for n in cnn_q.model.graph.node:
        if n.op_type == "Conv" and n.output[0].startswith("/c1/"):
            assert n.output[0] not in quantized  # no QDQ between the conv and its ReLU
    fused = cnn_q.facts["quantization"]["fused_activations"]
    assert {f["node"] for f in fused} == {"/c1/Conv", "/a/Conv", "/dw/Conv"}


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("int8", {"Sigmoid": (1 / 256, -128), "Softmax": (1 / 256, -128), "Tanh": (1 / 128, 0)}),
        ("int16x8", {"Sigmoid": (1 / 32768, 0), "Softmax": (1 / 32768, 0), "Tanh": (1 / 32768, 0)}),
    ],
)
def test_fixed_qparams_in_the_model(
    heads: OnnxArtifact, mode: str, expected: dict[str, tuple[float, int]]
) -> None:
    q = quantize(heads, QuantConfig(mode=mode), random_samples(heads, 8))
    qp = activation_qparams(q.model)
    for n in q.model.graph.node:
        if n.op_type in expected:
            assert qp[n.output[0]] == pytest.approx(expected[n.op_type]), n.op_type
            assert q.facts["quantization"]["tensors"][n.output[0]]["observer"] == "fixed"


def test_fixed_output_range_in_facts(heads: OnnxArtifact) -> None:
    q = quantize(heads, QuantConfig(), random_samples(heads, 4))
    tensors = q.facts["quantization"]["tensors"]
    sigmoid = next(n for n in q.model.graph.node if n.op_type == "Sigmoid").output[0]
    assert tensors[sigmoid]["range"] == [0.0, 255 / 256]
