"""integer.fuse: RELU/RELU6 folded into the producer (also through layout ops) without changing
a value, and a TRANSPOSE before a reduction folded into its axes."""

from __future__ import annotations

import numpy as np

from bridge.lower.integer.fuse import fold_transposes_into_reductions, fuse_activations
from bridge.runtime.metrics import sqnr_db
from bridge.runtime.tolerances import FP32_MIN_SQNR_DB
from tests.unit.lower.graph_builders import F32, I32, add_op, new_graph, op_types, run

RNG = np.random.default_rng(0)
W = RNG.standard_normal((6, 4)).astype(np.float32)
X = (3 * RNG.standard_normal((2, 4))).astype(np.float32)
RELU6 = np.clip(X @ W.T, 0, 6)


def _fc_then(*acts: str, reshape: bool = False, second_reader: bool = False):
    """x ─FC→ h [─RESHAPE→ h2] ─act→ y (one per name in `acts`, chained)."""
    g = new_graph()
    x = g.add_tensor("x", [2, 4], F32)
    w = g.add_tensor("w", W.shape, F32, data=W)
    h = g.add_tensor("h", [2, 6], F32)
    fc = g.new_op("FULLY_CONNECTED", [x, w, -1], [h], 1)
    g.ops.append(fc)
    outputs = []
    if reshape:
        shape = g.add_tensor("shape", [2], I32, data=np.array([2, 6], np.int32))
        h2 = g.add_tensor("h2", [2, 6], F32)
        add_op(g, "RESHAPE", [h, shape], [h2], newShape=[2, 6])
        h = h2
    for i, act in enumerate(acts):
        y = g.add_tensor(f"y{i}", [2, 6], F32)
        add_op(g, act, [h], [y])
        h = y
    if second_reader:
        z = g.add_tensor("z", [2, 6], F32)
        add_op(g, "ABS", [g.producers()[h].inputs[0]], [z])
        outputs.append(z)
    g.sg.inputs, g.sg.outputs = [x], [h, *outputs]
    return g, fc


def test_relu6_folds_into_fully_connected() -> None:
    g, fc = _fc_then("RELU6")
    assert fuse_activations(g) == 1
    assert op_types(g) == ["FULLY_CONNECTED"]
    assert fc.builtinOptions.fusedActivationFunction == 3  # RELU6
    (y,) = run(g, X)
    assert sqnr_db(RELU6, y) >= FP32_MIN_SQNR_DB
    assert y.min() == 0.0 and y.max() == 6.0  # the clamp is applied


def test_relu_folds_through_a_reshape() -> None:
    g, fc = _fc_then("RELU", reshape=True)
    assert fuse_activations(g) == 1
    assert op_types(g) == ["FULLY_CONNECTED", "RESHAPE"]
    assert fc.builtinOptions.fusedActivationFunction == 1
    (y,) = run(g, X)
    assert sqnr_db(np.maximum(X @ W.T, 0), y) >= FP32_MIN_SQNR_DB


def test_only_one_activation_folds_into_a_producer() -> None:
    g, fc = _fc_then("RELU6", "RELU")
    assert fuse_activations(g) == 1  # the RELU reads RELU6's output, no producer with options
    assert op_types(g) == ["FULLY_CONNECTED", "RELU"]
    assert fc.builtinOptions.fusedActivationFunction == 3
    (y,) = run(g, X)
    assert sqnr_db(RELU6, y) >= FP32_MIN_SQNR_DB


def test_a_second_reader_of_the_product_blocks_the_fold() -> None:
    g, fc = _fc_then("RELU6", second_reader=True)
    assert fuse_activations(g) == 0
    assert fc.builtinOptions.fusedActivationFunction == 0
    y, z = run(g, X)
    assert sqnr_db(RELU6, y) >= FP32_MIN_SQNR_DB
    assert sqnr_db(np.abs(X @ W.T), z) >= FP32_MIN_SQNR_DB


def _transpose_mean(perm: list[int], axes: list[int]):
    """x [1,4,4,3] ─T(perm)→ a ─MEAN(axes, keep_dims=False)→ y."""
    g = new_graph()
    x = g.add_tensor("x", [1, 4, 4, 3], F32)
    p = g.add_tensor("perm", [4], I32, data=np.array(perm, np.int32))
    a = g.add_tensor("a", [[1, 4, 4, 3][i] for i in perm], F32)
    ax = g.add_tensor("axes", [len(axes)], I32, data=np.array(axes, np.int32))
    kept = [[1, 4, 4, 3][perm[i]] for i in range(4) if i not in axes]
    y = g.add_tensor("y", kept, F32)
    tr = add_op(g, "TRANSPOSE", [x, p], [a])
    red = add_op(g, "MEAN", [a, ax], [y], table="Reducer", keepDims=False)
    g.sg.inputs, g.sg.outputs = [x], [y]
    return g, {id(tr), id(red)}


XI = RNG.standard_normal((1, 4, 4, 3)).astype(np.float32)


def test_nchw_transpose_before_a_global_mean_folds() -> None:
    g, integer = _transpose_mean([0, 3, 1, 2], [2, 3])
    assert fold_transposes_into_reductions(g, integer) == 1
    assert op_types(g) == ["MEAN"]
    (y,) = run(g, XI)
    assert y.shape == (1, 3)
    assert sqnr_db(XI.mean(axis=(1, 2)), y) >= FP32_MIN_SQNR_DB


def test_transpose_that_reorders_kept_axes_stays() -> None:
    g, integer = _transpose_mean([0, 3, 2, 1], [0])  # kept axes 3, 2, 1: reversed
    assert fold_transposes_into_reductions(g, integer) == 0
    assert op_types(g) == ["TRANSPOSE", "MEAN"]


def test_float_pairs_are_not_folded() -> None:
    g, _ = _transpose_mean([0, 3, 1, 2], [2, 3])
    assert fold_transposes_into_reductions(g, set()) == 0
