"""Outputs onnx2tf returns permuted: the perm that restores them, the TRANSPOSE added, the error
when no single perm fits, and torch models whose final transpose onnx2tf drops."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import helper

from bridge.contract import IOContract, TensorSpec
from bridge.errors import LoweringError
from bridge.lower import lower_float, tflite_graph
from bridge.lower.floating import io_contract, layout
from bridge.runtime import tflite_io
from bridge.runtime.tolerances import FP32_MIN_SQNR_DB
from tests.unit.lower.tflite_models import empty_model

F32 = np.dtype(np.float32)


@pytest.mark.parametrize(
    ("got", "want", "perm"),
    [
        ([1, 4, 24], [1, 24, 4], [0, 2, 1]),
        ([1, 6, 5, 3], [1, 5, 3, 6], [0, 2, 3, 1]),
        ([1, 12, 1], [1, 1, 12], [0, 2, 1]),  # size-1 axes: one data order
        ([2, 3], [3, 2], [1, 0]),
    ],
)
def test_output_perm_when_one_data_order_fits(got, want, perm):
    found = layout.output_perm(got, want)
    assert [got[p] for p in found] == want
    order = [a for a in found if got[a] != 1]
    assert order == [a for a in perm if got[a] != 1]


@pytest.mark.parametrize(
    ("got", "want"),
    [
        ([1, 4, 24], [1, 4, 24]),  # already right
        ([1, 4, 4, 3], [1, 3, 4, 4]),  # [0,3,1,2] or [0,3,2,1]: ambiguous
        ([1, 7, 6, 10], [1, 14, 6, 5]),  # not a permutation
    ],
)
def test_output_perm_refuses_to_guess(got, want):
    assert layout.output_perm(got, want) is None


def _relu_model(x_shape: list[int], y_shape: list[int]) -> Any:
    """x ─RELU→ y, with y declared as `y_shape` (what onnx2tf wrote)."""
    m = empty_model()
    x = tflite_graph.add_tensor(m, "x", x_shape, F32)
    y = tflite_graph.add_tensor(m, "y", y_shape, F32)
    m.subgraphs[0].operators = [tflite_graph.make_op(m, "RELU", [x], [y])]
    m.subgraphs[0].inputs, m.subgraphs[0].outputs = [x], [y]
    return m


def _contract(x_shape, y_shape) -> IOContract:
    return IOContract(
        (TensorSpec("x", tuple(x_shape), "float32"),),
        (TensorSpec("y", tuple(y_shape), "float32"),),
    )


def test_permuted_output_gets_a_transpose_back():
    from ai_edge_litert.interpreter import Interpreter

    m = _relu_model([1, 4, 6], [1, 4, 6])
    contract = _contract([1, 4, 6], [1, 6, 4])
    assert layout.restore_permuted_outputs(m, contract) == {"y": [0, 2, 1]}
    io_contract.check_io(m, contract)
    interp = Interpreter(model_content=tflite_io.save(m))
    interp.allocate_tensors()
    x = np.random.default_rng(0).standard_normal((1, 4, 6)).astype(np.float32)
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    (out,) = interp.get_output_details()
    assert out["name"] == "y"
    np.testing.assert_array_equal(
        interp.get_tensor(out["index"]), np.maximum(x, 0).transpose(0, 2, 1)
    )


def test_shape_change_error_names_output_shapes_node_and_workaround():
    m = _relu_model([1, 7, 6, 10], [1, 7, 6, 10])
    contract = _contract([1, 7, 6, 10], [1, 14, 6, 5])
    source = helper.make_model(
        helper.make_graph(
            [helper.make_node("Concat", ["x", "x"], ["y"], axis=1, name="/cat")],
            "g",
            [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 7, 6, 5])],
            [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 14, 6, 5])],
        )
    )
    assert layout.restore_permuted_outputs(m, contract) == {}
    with pytest.raises(LoweringError) as info:
        io_contract.check_io(m, contract, source=source)
    text = str(info.value)
    assert "output 'y' has shape [1, 7, 6, 10], contract (1, 14, 6, 5)" in text
    assert "ONNX node '/cat' (Concat)" in text
    assert "return that Concat's input from the model" in text


class _LinearThenTranspose(torch.nn.Module):
    """[1, 4, 12] → Linear → square → transpose(1, 2): onnx2tf drops the final transpose."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(12, 24)

    def forward(self, x):
        y = self.fc(x + x)
        return (y * y).transpose(1, 2)


class _PermuteImage(torch.nn.Module):
    """[1, 3, 6, 5] → relu → permute(0, 3, 1, 2) → [1, 5, 3, 6]."""

    def forward(self, x):
        return torch.relu(x).permute(0, 3, 1, 2)


@pytest.mark.parametrize(
    ("module", "shape", "out_shape"),
    [(_LinearThenTranspose, (1, 4, 12), (1, 24, 4)), (_PermuteImage, (1, 3, 6, 5), (1, 5, 3, 6))],
    ids=["linear_transpose", "permute_image"],
)
def test_dropped_output_transpose_is_restored(tools, module, shape, out_shape):
    artifact = tools.export(module(), [("x", shape, "plain")], [("y", "plain")])
    assert artifact.contract.outputs[0].shape == out_shape
    tfl = lower_float(artifact)
    assert tools.io(tfl.data)[1] == [("y", out_shape, "float32")]
    sqnr = tools.sqnr(artifact, tfl)
    assert sqnr["y"] >= FP32_MIN_SQNR_DB, sqnr
