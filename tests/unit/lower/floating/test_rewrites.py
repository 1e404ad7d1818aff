"""Flatbuffer rewrites on hand-built .tflite graphs: transpose cancelling, NHWC boundary,
I/O matching. Each result is run in LiteRT and compared with numpy."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bridge.contract import IOContract, TensorSpec
from bridge.errors import LoweringError
from bridge.lower import tflite_graph
from bridge.lower.floating import io_contract, layout, transposes
from bridge.runtime import tflite_io
from tests.unit.lower.tflite_models import empty_model

F32 = np.dtype(np.float32)
#: A mean of 16 or 48 standard-normal float32 values: numpy and TFLite sum in different orders,
#: which moves the result by a few float32 ulps of the partial sums (~1e-7).
MEAN_ATOL = 1e-6


def _relu_sandwich(p1: list[int], p2: list[int]) -> tuple[Any, dict[str, int]]:
    """x [1,4,4,3] ─T(p1)→ a ─RELU→ u ─T(p2)→ b (output)."""
    m = empty_model()
    x = tflite_graph.add_tensor(m, "x", [1, 4, 4, 3], F32)
    a_shape = [[1, 4, 4, 3][p] for p in p1]
    a = tflite_graph.add_tensor(m, "a", a_shape, F32)
    u = tflite_graph.add_tensor(m, "u", a_shape, F32)
    b = tflite_graph.add_tensor(m, "b", [a_shape[p] for p in p2], F32)
    m.subgraphs[0].operators = [
        tflite_graph.transpose_op(m, x, a, p1),
        tflite_graph.make_op(m, "RELU", [a], [u]),
        tflite_graph.transpose_op(m, u, b, p2),
    ]
    m.subgraphs[0].inputs, m.subgraphs[0].outputs = [x], [b]
    return m, {"x": x, "a": a, "u": u, "b": b}


def _run(model: Any, *feeds: np.ndarray) -> list[np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=tflite_io.save(model))
    interp.allocate_tensors()
    for d, x in zip(interp.get_input_details(), feeds, strict=True):
        interp.set_tensor(d["index"], x)
    interp.invoke()
    return [interp.get_tensor(d["index"]) for d in interp.get_output_details()]


def _ops(model: Any) -> list[str]:
    return [tflite_io.op_name(model, op) for op in model.subgraphs[0].operators]


X = np.random.default_rng(0).standard_normal((1, 4, 4, 3)).astype(np.float32)


def test_inverse_pair_across_relu_cancels() -> None:
    m, t = _relu_sandwich([0, 3, 1, 2], [0, 2, 3, 1])
    sg = m.subgraphs[0]
    a, u, x = sg.tensors[t["a"]], sg.tensors[t["u"]], sg.tensors[t["x"]]
    removed, moved = transposes.cancel_transposes(m)
    assert removed == 2
    assert _ops(m) == ["RELU"]
    (y,) = _run(m, X)
    np.testing.assert_array_equal(y, np.maximum(X, 0))
    # The vanished NCHW tensors are the survivors transposed by (0, 3, 1, 2).
    out = sg.tensors[int(sg.outputs[0])]
    assert tflite_io.tensor_name(out) == "b"
    assert moved.get(a) == (x, (0, 3, 1, 2))
    assert moved.get(u) == (out, (0, 3, 1, 2))


def test_non_inverse_pair_stays() -> None:
    m, _ = _relu_sandwich([0, 3, 1, 2], [0, 3, 1, 2])
    removed, _ = transposes.cancel_transposes(m)
    assert removed == 0
    assert _ops(m) == ["RELU", "TRANSPOSE", "TRANSPOSE"]  # the first one sank below the RELU
    (y,) = _run(m, X)
    np.testing.assert_array_equal(y, np.maximum(X, 0).transpose(0, 3, 1, 2).transpose(0, 3, 1, 2))


def test_pair_with_a_second_reader_keeps_the_first_transpose() -> None:
    """x ─T→ a ─T⁻¹→ b, and a is also a graph output: only the second transpose goes."""
    m = empty_model()
    x = tflite_graph.add_tensor(m, "x", [1, 4, 4, 3], F32)
    a = tflite_graph.add_tensor(m, "a", [1, 3, 4, 4], F32)
    b = tflite_graph.add_tensor(m, "b", [1, 4, 4, 3], F32)
    y = tflite_graph.add_tensor(m, "y", [1, 4, 4, 3], F32)
    sg = m.subgraphs[0]
    sg.operators = [
        tflite_graph.transpose_op(m, x, a, [0, 3, 1, 2]),
        tflite_graph.transpose_op(m, a, b, [0, 2, 3, 1]),
        tflite_graph.make_op(m, "RELU", [b], [y]),
    ]
    sg.inputs, sg.outputs = [x], [a, y]
    removed, _ = transposes.cancel_transposes(m)
    assert removed == 1
    assert _ops(m) == ["TRANSPOSE", "RELU"]
    got_a, got_y = _run(m, X)
    np.testing.assert_array_equal(got_a, X.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(got_y, np.maximum(X, 0))


def _transpose_then_reduce(perm: list[int], axes: list[int], keep_dims: bool = False) -> Any:
    """x [1,4,4,3] ─T(perm)→ a ─MEAN(axes)→ y."""
    m = empty_model()
    x = tflite_graph.add_tensor(m, "x", [1, 4, 4, 3], F32)
    a_shape = [[1, 4, 4, 3][p] for p in perm]
    a = tflite_graph.add_tensor(m, "a", a_shape, F32)
    y_shape = [1 if i in axes else d for i, d in enumerate(a_shape)]
    y_shape = y_shape if keep_dims else [d for i, d in enumerate(a_shape) if i not in axes]
    y = tflite_graph.add_tensor(m, "y", y_shape, F32)
    ax = tflite_graph.add_tensor(m, "axes", [len(axes)], np.dtype(np.int32), data=np.array(axes))
    opts = tflite_io.schema().ReducerOptionsT()
    opts.keepDims = keep_dims
    m.subgraphs[0].operators = [
        tflite_graph.transpose_op(m, x, a, perm),
        tflite_graph.make_op(m, "MEAN", [a, ax], [y], options=("ReducerOptions", opts)),
    ]
    m.subgraphs[0].inputs, m.subgraphs[0].outputs = [x], [y]
    return m


def test_transpose_folds_into_global_mean() -> None:
    m = _transpose_then_reduce([0, 3, 1, 2], [2, 3])  # NHWC → NCHW, mean over H, W
    removed, _ = transposes.cancel_transposes(m)
    assert (removed, _ops(m)) == (1, ["MEAN"])
    axes = tflite_graph.const_array(m, int(m.subgraphs[0].operators[0].inputs[1]))
    assert axes.tolist() == [1, 2]
    (y,) = _run(m, X)
    np.testing.assert_allclose(y, X.mean((1, 2)), rtol=0, atol=MEAN_ATOL)


@pytest.mark.parametrize(
    ("perm", "axes", "keep_dims"),
    [([0, 3, 1, 2], [2, 3], True), ([0, 2, 1, 3], [3], False)],
    ids=["keep_dims", "kept_axes_reordered"],
)
def test_transpose_stays_before_other_reductions(perm, axes, keep_dims) -> None:
    m = _transpose_then_reduce(perm, axes, keep_dims)
    removed, _ = transposes.cancel_transposes(m)
    assert (removed, _ops(m)) == (0, ["TRANSPOSE", "MEAN"])
    (y,) = _run(m, X)
    np.testing.assert_allclose(
        y, X.transpose(perm).mean(tuple(axes), keepdims=keep_dims), rtol=0, atol=MEAN_ATOL
    )


def _nchw_relu() -> Any:
    """x [1,3,4,4] ─RELU→ y, channel-first I/O (what onnx2tf gives with shapes kept)."""
    m = empty_model()
    x = tflite_graph.add_tensor(m, "x", [1, 3, 4, 4], F32)
    y = tflite_graph.add_tensor(m, "y", [1, 3, 4, 4], F32)
    m.subgraphs[0].operators = [tflite_graph.make_op(m, "RELU", [x], [y])]
    m.subgraphs[0].inputs, m.subgraphs[0].outputs = [x], [y]
    return m


def test_channel_last_io_then_cancel_leaves_only_the_relu() -> None:
    m = _nchw_relu()
    layout.to_channel_last_io(m, ["x"], ["y"])
    assert _ops(m) == ["TRANSPOSE", "RELU", "TRANSPOSE"]
    nhwc = IOContract(
        (TensorSpec("x", (1, 4, 4, 3), "float32", "NHWC"),),
        (TensorSpec("y", (1, 4, 4, 3), "float32", "NHWC"),),
        nhwc=True,
    )
    io_contract.check_io(m, nhwc)
    transposes.cancel_transposes(m)
    assert _ops(m) == ["RELU"]
    io_contract.check_io(m, nhwc)
    (y,) = _run(m, X)
    np.testing.assert_array_equal(y, np.maximum(X, 0))


def test_channel_last_needs_rank_3() -> None:
    m = empty_model()
    x = tflite_graph.add_tensor(m, "x", [1, 3], F32)
    y = tflite_graph.add_tensor(m, "y", [1, 3], F32)
    m.subgraphs[0].operators = [tflite_graph.make_op(m, "RELU", [x], [y])]
    m.subgraphs[0].inputs, m.subgraphs[0].outputs = [x], [y]
    with pytest.raises(LoweringError, match="rank 2"):
        layout.to_channel_last_io(m, ["x"], [])


def _two_in_two_out() -> Any:
    """Inputs (b [1,2], a [1,3]); outputs (sum_b = b + b, "tmp" = a·a); names out of order."""
    m = empty_model()
    b = tflite_graph.add_tensor(m, "b", [1, 2], F32)
    a = tflite_graph.add_tensor(m, "a", [1, 3], F32)
    sb = tflite_graph.add_tensor(m, "sum_b", [1, 2], F32)
    sq = tflite_graph.add_tensor(m, "tmp", [1, 3], F32)
    add_opts = tflite_io.schema().AddOptionsT()
    mul_opts = tflite_io.schema().MulOptionsT()
    m.subgraphs[0].operators = [
        tflite_graph.make_op(m, "ADD", [b, b], [sb], options=("AddOptions", add_opts)),
        tflite_graph.make_op(m, "MUL", [a, a], [sq], options=("MulOptions", mul_opts)),
    ]
    m.subgraphs[0].inputs, m.subgraphs[0].outputs = [b, a], [sb, sq]
    return m


CONTRACT = IOContract(
    (TensorSpec("a", (1, 3), "float32"), TensorSpec("b", (1, 2), "float32")),
    (TensorSpec("square_a", (1, 3), "float32"), TensorSpec("sum_b", (1, 2), "float32")),
)


def test_match_io_reorders_and_renames() -> None:
    m = _two_in_two_out()
    assert io_contract.io_problems(m, CONTRACT)
    io_contract.match_io(m, CONTRACT)
    io_contract.write_signature(m, CONTRACT)
    assert io_contract.io_problems(m, CONTRACT) == []
    a = np.array([[1.0, 2.0, 3.0]], np.float32)
    b = np.array([[5.0, 7.0]], np.float32)
    square_a, sum_b = _run(m, a, b)  # the interpreter now takes (a, b) and gives (square_a, sum_b)
    np.testing.assert_array_equal(square_a, a * a)
    np.testing.assert_array_equal(sum_b, b + b)
    (sig,) = m.signatureDefs
    assert [t.name for t in sig.outputs] == ["square_a", "sum_b"]


def test_check_io_lists_every_difference() -> None:
    m = _two_in_two_out()
    bad = IOContract(
        (TensorSpec("b", (1, 5), "float32"), TensorSpec("a", (None, 3), "float32")),
        (TensorSpec("sum_b", (1, 2), "int8"), TensorSpec("tmp", (1, 3), "float32")),
    )
    with pytest.raises(LoweringError) as info:
        io_contract.check_io(m, bad)
    text = str(info.value)
    assert "input 'b' has shape [1, 2], contract (1, 5)" in text
    assert "input 'a' has shape [1, 3], contract (None, 3)" in text
    assert "output 'sum_b' has dtype float32, contract int8" in text


def test_match_io_refuses_ambiguous_renames() -> None:
    m = _two_in_two_out()
    same_shape = IOContract(
        CONTRACT.inputs,
        (TensorSpec("p", (1, 7), "float32"), TensorSpec("sum_b", (1, 2), "float32")),
    )
    with pytest.raises(LoweringError, match="no output named 'p'"):
        io_contract.match_io(m, same_shape)
