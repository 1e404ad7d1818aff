"""fold_bias: onnx2tf's TRANSPOSE_CONV → ADD(bias) becomes one TRANSPOSE_CONV (version 3) with
the bias as its fourth input, giving LiteRT the same numbers; pairs that cannot fold stay."""

from __future__ import annotations

from typing import Any

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from bridge.lower.floating.fold_bias import TRANSPOSE_CONV_BIAS_VERSION, fold_transpose_conv_bias
from bridge.lower.tflite_graph import Graph
from bridge.runtime import tflite_io
from bridge.runtime.metrics import sqnr_db
from bridge.runtime.tolerances import FP32_MIN_SQNR_DB
from tests.unit.lower.graph_builders import F32, I32, add_op, new_graph, op_types

RNG = np.random.default_rng(0)
X = RNG.standard_normal((1, 4, 4, 2)).astype(np.float32)
W = RNG.standard_normal((3, 3, 3, 2)).astype(np.float32)  # [O, kh, kw, I]
BIAS = np.array([1.5, -2.0, 0.75], np.float32)


def _deconv_add(*, bias: np.ndarray = BIAS, fused: int = 0, conv_is_output: bool = False) -> Graph:
    """x [1,4,4,2] ─TRANSPOSE_CONV(W, SAME, stride 1)→ c [1,4,4,3] ─ADD(bias)→ y."""
    g = new_graph()
    x = g.add_tensor("x", X.shape, F32)
    shape = g.add_tensor("shape", [4], I32, data=np.array([1, 4, 4, 3], np.int32))
    w = g.add_tensor("w", W.shape, F32, data=W)
    c = g.add_tensor("c", [1, 4, 4, 3], F32)
    b = g.add_tensor("b", bias.shape, F32, data=bias)
    y = g.add_tensor("y", [1, 4, 4, 3], F32)
    add_op(g, "TRANSPOSE_CONV", [shape, w, x], [c], padding=0, strideW=1, strideH=1)
    add_op(g, "ADD", [c, b], [y], fusedActivationFunction=fused)
    g.sg.inputs = [x]
    g.sg.outputs = [c, y] if conv_is_output else [y]
    g.commit()
    return g


def _invoke(model: Any) -> list[np.ndarray]:
    interp = Interpreter(model_content=tflite_io.save(model))
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], X)
    interp.invoke()
    return [interp.get_tensor(d["index"]) for d in interp.get_output_details()]


def test_bias_add_folds_into_the_transpose_conv_with_the_same_output() -> None:
    g = _deconv_add()
    (before,) = _invoke(g.model)
    assert fold_transpose_conv_bias(g.model) == 1
    (after,) = _invoke(g.model)
    assert sqnr_db(before, after) >= FP32_MIN_SQNR_DB
    assert sqnr_db(before, after - BIAS) < FP32_MIN_SQNR_DB  # the bias is really applied
    g = Graph(g.model)
    assert op_types(g) == ["TRANSPOSE_CONV"]
    conv = g.ops[0]
    assert g.constant(int(conv.inputs[3])).tolist() == BIAS.tolist()
    assert g.name(int(conv.outputs[0])) == "y" and g.outputs == [int(conv.outputs[0])]
    assert g.model.operatorCodes[conv.opcodeIndex].version == TRANSPOSE_CONV_BIAS_VERSION
    assert "c" not in {g.name(i) for i in range(len(g.sg.tensors))}  # pruned


def test_a_broadcast_bias_is_flattened_to_one_value_per_channel() -> None:
    g = _deconv_add(bias=BIAS.reshape(1, 1, 1, 3))
    (before,) = _invoke(g.model)
    assert fold_transpose_conv_bias(g.model) == 1
    (after,) = _invoke(g.model)
    assert sqnr_db(before, after) >= FP32_MIN_SQNR_DB
    g = Graph(g.model)
    bias = int(g.ops[0].inputs[3])
    assert list(g.tensor(bias).shape) == [3] and g.name(bias) == "c_bias"


def test_pairs_that_cannot_fold_are_left_alone() -> None:
    relu = tflite_io.schema().ActivationFunctionType.RELU
    one_value = np.array([0.5], np.float32)  # broadcast over channels: not a per-channel bias
    for g in (
        _deconv_add(fused=relu),
        _deconv_add(conv_is_output=True),
        _deconv_add(bias=one_value),
    ):
        (before,) = _invoke(g.model)[-1:]
        assert fold_transpose_conv_bias(g.model) == 0
        assert op_types(Graph(g.model)) == ["TRANSPOSE_CONV", "ADD"]
        assert sqnr_db(before, _invoke(g.model)[-1]) >= FP32_MIN_SQNR_DB
