"""fuse_conv_bn: BatchNormalization folds into Conv, ConvTranspose, Gemm and MatMul."""

from __future__ import annotations

import numpy as np
import onnx

from bridge.passes.fuse_conv_bn import fuse_conv_bn

#: Folding rounds W·s and (b − μ)·s + β to float32 once; on O(1) data with O(10) outputs the
#: outputs move by a few float32 ulps.
FUSED_MAX_ABS = 1e-5


def _bn_params(channels: int, prefix: str = "bn") -> dict[str, np.ndarray]:
    return {
        f"{prefix}_scale": np.float32(0.5) + np.abs(np.float32(1) * _r(channels, 1)),
        f"{prefix}_bias": _r(channels, 2),
        f"{prefix}_mean": _r(channels, 3),
        f"{prefix}_var": np.float32(0.1) + np.abs(_r(channels, 4)),
    }


def _r(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32)


def _bn(g, x: str, y: str, prefix: str = "bn"):
    ins = [x, f"{prefix}_scale", f"{prefix}_bias", f"{prefix}_mean", f"{prefix}_var"]
    return g.node("BatchNormalization", ins, [y], epsilon=1e-3)


def _check(g, model, expected_ops):
    before = g.ort(model)
    result = fuse_conv_bn(model)
    assert result.count == 1
    assert g.ops(result.model) == expected_ops
    assert g.io(result.model) == g.io(model)
    assert g.diff(before, g.ort(result.model)) <= FUSED_MAX_ABS
    onnx.checker.check_model(result.model, full_check=True)
    return result


def test_conv_with_bias(g):
    model = g.model(
        [g.node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), _bn(g, "c", "y")],
        {"x": [1, 3, 6, 6]},
        {"y": [1, 4, 6, 6]},
        {"w": g.rand(4, 3, 3, 3), "b": g.rand(4, seed=1), **_bn_params(4)},
    )
    result = _check(g, model, ["Conv"])
    assert result.model.graph.node[0].output == ["y"]
    assert {t.name for t in result.model.graph.initializer} == {"w", "b"}


def test_depthwise_conv_without_bias_feeding_relu(g):
    model = g.model(
        [
            g.node("Conv", ["x", "w"], ["c"], group=4),
            _bn(g, "c", "n"),
            g.node("Relu", ["n"], ["y"]),
        ],
        {"x": [1, 4, 5, 5]},
        {"y": [1, 4, 3, 3]},
        {"w": g.rand(4, 1, 3, 3), **_bn_params(4)},
    )
    result = _check(g, model, ["Conv", "Relu"])
    assert len(result.model.graph.node[0].input) == 3  # a bias was added


def test_grouped_conv_transpose(g):
    # W is [C_in=4, C_out/group=3, 2, 2]; group=2 → 6 output channels.
    model = g.model(
        [
            g.node("ConvTranspose", ["x", "w", "b"], ["c"], group=2, strides=[2, 2]),
            _bn(g, "c", "y"),
        ],
        {"x": [1, 4, 3, 3]},
        {"y": [1, 6, 6, 6]},
        {"w": g.rand(4, 3, 2, 2), "b": g.rand(6, seed=1), **_bn_params(6)},
    )
    _check(g, model, ["ConvTranspose"])


def test_gemm_with_trans_b_and_beta(g):
    model = g.model(
        [g.node("Gemm", ["x", "w", "b"], ["c"], transB=1, alpha=0.7, beta=0.5), _bn(g, "c", "y")],
        {"x": [2, 5]},
        {"y": [2, 3]},
        {"w": g.rand(3, 5), "b": g.rand(3, seed=1), **_bn_params(3)},
    )
    _check(g, model, ["Gemm"])


def test_matmul_becomes_gemm(g):
    model = g.model(
        [g.node("MatMul", ["x", "w"], ["c"]), _bn(g, "c", "y")],
        {"x": [2, 5]},
        {"y": [2, 3]},
        {"w": g.rand(5, 3), **_bn_params(3)},
    )
    _check(g, model, ["Gemm"])


def test_shared_weight_is_not_changed_for_the_other_conv(g):
    model = g.model(
        [
            g.node("Conv", ["x", "w"], ["c"]),
            _bn(g, "c", "y"),
            g.node("Conv", ["x", "w"], ["z"]),
        ],
        {"x": [1, 2, 4, 4]},
        {"y": [1, 2, 4, 4], "z": [1, 2, 4, 4]},
        {"w": g.rand(2, 2, 1, 1), **_bn_params(2)},
    )
    result = _check(g, model, ["Conv", "Conv"])
    assert {t.name for t in result.model.graph.initializer} == {"w", "w_1", "w_bias"}


def test_not_fused_when_conv_output_has_another_reader(g):
    model = g.model(
        [g.node("Conv", ["x", "w"], ["c"]), _bn(g, "c", "y"), g.node("Relu", ["c"], ["z"])],
        {"x": [1, 2, 4, 4]},
        {"y": [1, 2, 4, 4], "z": [1, 2, 4, 4]},
        {"w": g.rand(2, 2, 1, 1), **_bn_params(2)},
    )
    result = fuse_conv_bn(model)
    assert (result.modified, result.count) == (False, 0)
    assert g.ops(result.model) == ["Conv", "BatchNormalization", "Relu"]


def test_not_fused_when_bn_follows_a_3d_matmul(g):
    # BN's channel axis is 1 (time), not the MatMul's output features.
    model = g.model(
        [g.node("MatMul", ["x", "w"], ["c"]), _bn(g, "c", "y")],
        {"x": [1, 3, 5]},
        {"y": [1, 3, 3]},
        {"w": g.rand(5, 3), **_bn_params(3)},
    )
    assert fuse_conv_bn(model).count == 0
