"""split_directions: reverse and bidirectional LSTMs become forward LSTMs on a flipped sequence.

ONNX Runtime checks that Y, Y_h and Y_c are unchanged (the same steps in the same order, so
equal up to float32 summation order), and that the layers it cannot split are left alone.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from bridge.lower.floating.lstm_directions import split_directions
from bridge.runtime.metrics import sqnr_db
from bridge.runtime.tolerances import PASS_MIN_SQNR_DB

T, B, F, H = 6, 2, 3, 4


def _lstm(direction: str, *, clip: float = 0.0, h0: float = 0.0) -> onnx.ModelProto:
    d = 2 if direction == "bidirectional" else 1
    rng = np.random.default_rng(0)
    inits = {
        "W": rng.standard_normal((d, 4 * H, F)),
        "R": rng.standard_normal((d, 4 * H, H)),
        "B": rng.standard_normal((d, 8 * H)),
        "h0": np.full((d, B, H), h0),
        "c0": np.zeros((d, B, H)),
    }
    attrs = {"hidden_size": H, "direction": direction}
    if clip:
        attrs["clip"] = clip
    node = helper.make_node(
        "LSTM", ["x", "W", "R", "B", "", "h0", "c0"], ["y", "h", "c"], name="lstm", **attrs
    )
    out = [("y", [T, d, B, H]), ("h", [d, B, H]), ("c", [d, B, H])]
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [T, B, F])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in out],
        [numpy_helper.from_array(np.asarray(v, np.float32), n) for n, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})


@pytest.mark.parametrize("direction", ["reverse", "bidirectional"])
def test_split_keeps_y_h_and_c(direction):
    model = _lstm(direction)
    split, names = split_directions(model)
    assert names == ["lstm"]
    lstms = [n for n in split.graph.node if n.op_type == "LSTM"]
    assert len(lstms) == (2 if direction == "bidirectional" else 1)
    assert all("direction" not in {a.name for a in n.attribute} for n in lstms)
    onnx.checker.check_model(split)
    x = np.random.default_rng(1).standard_normal((T, B, F)).astype(np.float32)
    for ref, out in zip(_run(model, x), _run(split, x), strict=True):
        assert out.shape == ref.shape
        assert sqnr_db(ref, out) >= PASS_MIN_SQNR_DB


@pytest.mark.parametrize(
    ("model", "why"),
    [
        (_lstm("forward"), "already forward"),
        (_lstm("bidirectional", clip=5.0), "a cell clip"),
        (_lstm("bidirectional", h0=0.5), "a non-zero initial state"),
    ],
)
def test_layers_left_alone(model, why):
    split, names = split_directions(model)
    assert (split is model, names) == (True, []), why
