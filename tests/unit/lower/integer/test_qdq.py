"""Reading a QDQ model: the float graph it computes and the parameters of its tensors."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from bridge.errors import LoweringError
from bridge.lower.integer.qdq import read_qdq


def qdq_model(*, second_scale: float = 0.05) -> onnx.ModelProto:
    """x → Q(uint8) → DQ → Conv(DQ(int8 w, per-channel)) → Relu → Q → DQ → y."""
    w = np.array([[[[1]], [[-2]]], [[[3]], [[127]]]], np.int8)  # [2 out, 2 in, 1, 1]
    inits = [
        numpy_helper.from_array(np.array(0.1, np.float32), "sx"),
        numpy_helper.from_array(np.array(130, np.uint8), "zx"),
        numpy_helper.from_array(w, "w_q"),
        numpy_helper.from_array(np.array([0.01, 0.02], np.float32), "sw"),
        numpy_helper.from_array(np.zeros(2, np.int8), "zw"),
        numpy_helper.from_array(np.array(0.05, np.float32), "sy"),
        numpy_helper.from_array(np.array(-128, np.int8), "zy"),
        numpy_helper.from_array(np.array(second_scale, np.float32), "sy2"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "sx", "zx"], ["x_dq"]),
        helper.make_node("DequantizeLinear", ["w_q", "sw", "zw"], ["w"], axis=0),
        helper.make_node("Conv", ["x_dq", "w"], ["c"]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("QuantizeLinear", ["r", "sy", "zy"], ["r_q"]),
        helper.make_node("DequantizeLinear", ["r_q", "sy", "zy"], ["y"]),
        helper.make_node("QuantizeLinear", ["r", "sy2", "zy"], ["r_q2"]),
        helper.make_node("DequantizeLinear", ["r_q2", "sy2", "zy"], ["y2"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 3])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3, 3]),
            helper.make_tensor_value_info("y2", TensorProto.FLOAT, [1, 2, 3, 3]),
        ],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_float_graph_and_parameters() -> None:
    qdq = read_qdq(qdq_model(second_scale=0.05))
    g = qdq.float_model.graph
    assert [n.op_type for n in g.node] == ["Conv", "Relu", "Identity"]  # Identity → y2
    onnx.checker.check_model(qdq.float_model)
    # uint8 (0.1, 130) is carried as int8 (0.1, 2): the same real values.
    x = qdq.activations["x"]
    assert (x.dtype, float(x.scale[0]), int(x.zero_point[0])) == ("int8", pytest.approx(0.1), 2)
    # The Relu output feeds the graph outputs through Q/DQ: it takes the first output's name.
    assert g.node[1].output[0] == "y" and qdq.qdq_name("y") == "r"
    assert float(qdq.activations["y"].scale[0]) == pytest.approx(0.05)
    assert qdq.activations["y2"] == qdq.activations["y"]
    # The weight is the dequantized int8 weight, with its per-channel scales.
    w = numpy_helper.to_array(next(i for i in g.initializer if i.name == "w"))
    np.testing.assert_allclose(w[:, :, 0, 0], [[0.01, -0.02], [0.06, 2.54]], rtol=1e-6)
    assert qdq.constants["w"].axis == 0 and qdq.constants["w"].per_channel


def test_float_graph_computes_what_the_qdq_model_computes_before_rounding() -> None:
    model = qdq_model()
    qdq = read_qdq(model)
    x = np.random.default_rng(0).uniform(-10, 10, (1, 2, 3, 3)).astype(np.float32)
    x = ((np.clip(np.round(x / 0.1) + 130, 0, 255) - 130) * 0.1).astype(np.float32)  # on grid
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    run = lambda m: ort.InferenceSession(m.SerializeToString(), opts).run(None, {"x": x})  # noqa: E731
    got, got2 = run(qdq.float_model)
    want, _ = run(model)
    np.testing.assert_array_equal(got, got2)
    saturated = np.clip(got, 0.0, 255 * 0.05)  # the output Q's int8 range, zero point −128
    assert np.max(np.abs(saturated - want)) <= 0.05 / 2 + 1e-6  # one rounding of the output Q


def test_a_tensor_quantized_twice_differently_is_an_error() -> None:
    with pytest.raises(LoweringError, match="quantized twice"):
        read_qdq(qdq_model(second_scale=0.07))


def test_an_integer_graph_output_is_an_error() -> None:
    model = qdq_model()
    model.graph.output[1].name = "r_q2"
    with pytest.raises(LoweringError, match="integer tensors"):
        read_qdq(model)
