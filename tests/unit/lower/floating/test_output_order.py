"""output_order: an output whose repeated sizes hide onnx2tf's channel-last layout is found by
value (LiteRT against ONNX Runtime on one seeded input) and transposed back; a right one stays."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
from ai_edge_litert.interpreter import Interpreter
from onnx import TensorProto, helper

from bridge.contract import IOContract, TensorSpec
from bridge.lower import tflite_graph
from bridge.lower.floating import output_order
from bridge.runtime import tflite_io
from bridge.runtime.feeds import random_feeds
from bridge.runtime.metrics import sqnr_db
from bridge.runtime.tolerances import FP32_MIN_SQNR_DB
from tests.unit.lower.tflite_models import empty_model

SHAPE = (1, 4, 4, 4)  # every perm of the last three axes keeps the shape
CONTRACT = IOContract(
    (TensorSpec("x", SHAPE, "float32", "NCHW"),), (TensorSpec("y", SHAPE, "float32", "NCHW"),)
)


def _onnx() -> Any:
    """y = Relu(x)."""
    node = helper.make_node("Relu", ["x"], ["y"], name="relu")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, SHAPE)
    return helper.make_model(helper.make_graph([node], "g", [x], [y]))


def _tflite(perm: list[int] | None) -> Any:
    """y = RELU(x), then TRANSPOSE(perm) when given: the same shape, another data order."""
    m = empty_model()
    f32 = np.dtype(np.float32)
    x = tflite_graph.add_tensor(m, "x", list(SHAPE), f32)
    r = tflite_graph.add_tensor(m, "r" if perm else "y", list(SHAPE), f32)
    sg = m.subgraphs[0]
    sg.operators = [tflite_graph.make_op(m, "RELU", [x], [r])]
    y = r
    if perm:
        y = tflite_graph.add_tensor(m, "y", list(SHAPE), f32)
        sg.operators.append(tflite_graph.transpose_op(m, r, y, perm))
    sg.inputs, sg.outputs = np.array([x], np.int32), np.array([y], np.int32)
    return m


def _sqnr_against_onnx(model: Any) -> float:
    feeds = random_feeds(CONTRACT, seed=3)
    session = ort.InferenceSession(_onnx().SerializeToString(), providers=["CPUExecutionProvider"])
    (want,) = session.run(["y"], feeds)
    interp = Interpreter(model_content=tflite_io.save(model))
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], feeds["x"])
    interp.invoke()
    (out,) = interp.get_output_details()
    assert out["name"] == "y"
    return sqnr_db(want, interp.get_tensor(out["index"]))


def test_hidden_channel_last_output_is_transposed_back() -> None:
    model = _tflite([0, 2, 3, 1])  # NCHW data delivered as NHWC, same [1, 4, 4, 4] shape
    assert _sqnr_against_onnx(model) < FP32_MIN_SQNR_DB
    fixed = output_order.resolve_hidden_layouts(model, _onnx(), CONTRACT)
    assert fixed == {"y": [0, 3, 1, 2]}
    assert _sqnr_against_onnx(model) >= FP32_MIN_SQNR_DB
    assert tflite_io.op_histogram(tflite_io.save(model))["TRANSPOSE"] == 2


def test_a_right_output_is_left_alone() -> None:
    model = _tflite(None)
    assert output_order.resolve_hidden_layouts(model, _onnx(), CONTRACT) == {}
    assert len(model.subgraphs[0].operators) == 1
    assert _sqnr_against_onnx(model) >= FP32_MIN_SQNR_DB


def test_only_shapes_with_repeated_sizes_can_hide_a_layout() -> None:
    assert len(output_order._same_shape_perms([1, 4, 4, 4])) == 6
    assert output_order._same_shape_perms([1, 8, 4, 4]) == [[0, 1, 2, 3], [0, 1, 3, 2]]
    assert output_order._same_shape_perms([1, 3, 4, 5]) == [[0, 1, 2, 3]]
    assert output_order._same_shape_perms([4, 4]) == []
    distinct = IOContract(
        (TensorSpec("x", (1, 3, 4, 5), "float32"),), (TensorSpec("y", (1, 3, 4, 5), "float32"),)
    )
    # nothing can hide: the model is not even run (this one could not be: it has no operators)
    assert output_order.resolve_hidden_layouts(empty_model(), _onnx(), distinct) == {}
