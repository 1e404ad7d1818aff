"""fuse_matmul_add: 2-D MatMul with a constant weight plus a constant bias becomes Gemm."""

from __future__ import annotations

import numpy as np
import onnx

from bridge.passes.fuse_matmul_add import fuse_matmul_add

#: Gemm adds the bias inside the kernel; the float32 sums may round differently by an ulp.
FUSED_MAX_ABS = 1e-5


def _model(g, x_shape, bias, *, bias_first=False, out_shape=None):
    add_inputs = ["bias", "m"] if bias_first else ["m", "bias"]
    return g.model(
        [g.node("MatMul", ["x", "w"], ["m"]), g.node("Add", add_inputs, ["y"])],
        {"x": x_shape},
        {"y": out_shape or [*x_shape[:-1], 3]},
        {"w": g.rand(5, 3), "bias": bias},
    )


def test_matmul_add_becomes_gemm_keeping_the_output_name(g):
    model = _model(g, [4, 5], g.rand(3, seed=1))
    before = g.ort(model)
    result = fuse_matmul_add(model)
    assert result.count == 1
    assert g.ops(result.model) == ["Gemm"]
    assert result.model.graph.node[0].output == ["y"]
    assert g.io(result.model) == g.io(model)
    assert g.diff(before, g.ort(result.model)) <= FUSED_MAX_ABS
    onnx.checker.check_model(result.model, full_check=True)


def test_bias_first_and_row_bias(g):
    model = _model(g, [4, 5], g.rand(1, 3, seed=1), bias_first=True)
    before = g.ort(model)
    result = fuse_matmul_add(model)
    assert g.ops(result.model) == ["Gemm"]
    assert g.diff(before, g.ort(result.model)) <= FUSED_MAX_ABS


def test_3d_input_is_left_alone(g):
    model = _model(g, [2, 4, 5], g.rand(3, seed=1))
    result = fuse_matmul_add(model)
    assert (result.modified, result.count) == (False, 0)
    assert g.ops(result.model) == ["MatMul", "Add"]


def test_bias_that_enlarges_the_result_is_left_alone(g):
    model = _model(g, [4, 5], g.rand(2, 1, 3, seed=1), out_shape=[2, 4, 3])
    assert fuse_matmul_add(model).count == 0


def test_non_constant_bias_is_left_alone(g):
    model = g.model(
        [g.node("MatMul", ["x", "w"], ["m"]), g.node("Add", ["m", "b"], ["y"])],
        {"x": [4, 5], "b": [3]},
        {"y": [4, 3]},
        {"w": np.ones((5, 3), np.float32)},
    )
    assert fuse_matmul_add(model).count == 0
