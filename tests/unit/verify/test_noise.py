"""The rounding-noise model: rounding alone predicts s²/12 per element; with clip=True it
also clips to the quantized range, as the integer model does."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bridge.contract import IOContract, TensorSpec
from bridge.runtime.metrics import sqnr_db
from bridge.runtime.runners import OrtRunner
from bridge.verify import noise

STEP = 0.01
N = 4096


def qdq_relu() -> onnx.ModelProto:
    """x → QuantizeLinear(STEP, 0, int8) → DequantizeLinear → Relu → y."""
    inits = [
        numpy_helper.from_array(np.array(STEP, np.float32), "s"),
        numpy_helper.from_array(np.array(0, np.int8), "z"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
        helper.make_node("Relu", ["xd"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, N])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, N])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


CONTRACT = IOContract((TensorSpec("x", (1, N), "float32"),), (TensorSpec("y", (1, N), "float32"),))


def predict(x: np.ndarray, *, clip: bool) -> float:
    ref = {"y": np.maximum(x, 0)}
    return noise.predict(qdq_relu(), CONTRACT, [{"x": x}], [ref], clip=clip)["y"][0]


def test_rounding_alone_predicts_step_squared_over_twelve() -> None:
    x = np.random.default_rng(0).uniform(-1, 1, (1, N)).astype(np.float32)
    signal = float(np.mean(np.maximum(x, 0) ** 2))
    expected = 10 * np.log10(signal / (STEP**2 / 12 / 2))  # half the elements pass the Relu
    assert predict(x, clip=False) == pytest.approx(expected, abs=1.0)
    assert predict(x, clip=True) == pytest.approx(expected, abs=1.0)  # nothing to clip


def test_clip_predicts_what_the_integer_model_does_beyond_its_range() -> None:
    x = np.random.default_rng(1).uniform(-4, 4, (1, N)).astype(np.float32)  # range is ±1.27
    ref = np.maximum(x, 0)
    actual = sqnr_db(ref, OrtRunner(qdq_relu(), CONTRACT).run({"x": x})["y"])
    assert predict(x, clip=True) == pytest.approx(actual, abs=1.0)
    assert predict(x, clip=False) > actual + 30  # rounding alone leaves the clipping out
