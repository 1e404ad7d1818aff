"""correspondence: onnx2tf's report records are kept only where the .tflite tensor has the ONNX
tensor's shape, then followed through our own rewrites (`Moved`) to the final tensor and layout."""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto, helper

from bridge.contract import IOContract, TensorSpec
from bridge.lower import tflite_graph
from bridge.lower.floating import correspondence
from bridge.lower.floating.transposes import Moved
from tests.unit.lower.tflite_models import empty_model

F32 = np.dtype(np.float32)
CONTRACT = IOContract(
    (TensorSpec("x", (1, 3, 4, 5), "float32", "NHWC"),), (TensorSpec("y", (1, 60), "float32"),)
)


def _onnx() -> Any:
    """x [N,3,4,5] ─Relu→ r ─Sigmoid→ s ─Flatten→ y [N,60] (N symbolic)."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Sigmoid", ["r"], ["s"]),
        helper.make_node("Flatten", ["s"], ["y"]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 60])
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y]))


def _tflite() -> Any:
    """Tensors only: r_nhwc [1,4,5,3] (channel-last r), s_flat [1,60], bad [1,4,5,3]."""
    m = empty_model()
    for name, shape in (("r_nhwc", [1, 4, 5, 3]), ("s_flat", [1, 60]), ("bad", [1, 4, 5, 3])):
        tflite_graph.add_tensor(m, name, shape, F32)
    return m


def _rec(onnx_name: str, tfl: str, **kw: Any) -> dict[str, Any]:
    rec = {"onnx_output_name": onnx_name, "resolved_tflite_tensor_name": tfl}
    return {"exists_in_final_model": True, "onnx_op_type": "Relu", **rec, **kw}


def test_locate_keeps_records_whose_shape_fits() -> None:
    m = _tflite()
    records = [
        _rec("r", "r_nhwc", assume_channel_last_layout=True),
        _rec("s", "bad"),  # channel-last shape read as plain: [1,4,5,3] ≠ [N,3,4,5]
        _rec("y", "s_flat"),
        _rec("r", "gone", assume_channel_last_layout=True),  # not in the model
        _rec("r", "r_nhwc", exists_in_final_model=False),
        _rec("r", "r_nhwc", onnx_op_type="Constant"),
    ]
    found = correspondence.locate(records, m, _onnx())
    assert [(f.onnx_name, f.tensor.name, f.perm) for f in found] == [
        ("r", "r_nhwc", (0, 3, 1, 2)),
        ("y", "s_flat", (0, 1)),
    ]
    assert correspondence.onnx_shapes(_onnx())["r"] == (None, 3, 4, 5)


def test_build_follows_moved_tensors_and_marks_fused_ones() -> None:
    m = _tflite()
    t = {x.name: x for x in m.subgraphs[0].tensors}
    nchw = tflite_graph.add_tensor(m, "r_nchw", [1, 3, 4, 5], F32)
    moved = Moved()
    moved.add(t["r_nhwc"], m.subgraphs[0].tensors[nchw], [0, 2, 3, 1])  # nhwc = T(nchw)
    m.subgraphs[0].tensors.remove(t["r_nhwc"])  # a transpose rewrite removed it
    located = [
        correspondence.Located("r", t["r_nhwc"], (0, 3, 1, 2)),
        correspondence.Located("s", t["s_flat"], (0, 1)),
        correspondence.Located("y", t["s_flat"], (0, 1)),  # s_flat also stands for y
        correspondence.Located("q", t["bad"], (0, 2, 1, 3)),  # neither plain nor channel-last
    ]
    found = correspondence.build(located, moved, m, CONTRACT)
    assert found == {
        "x": {"tflite": "x", "channel_last": True, "fused": False},
        "r": {"tflite": "r_nchw", "channel_last": False, "fused": False},
        "s": {"tflite": "s_flat", "channel_last": False, "fused": True},
        "y": {"tflite": "s_flat", "channel_last": False, "fused": False},
    }


def test_a_vanished_tensor_with_no_successor_is_dropped() -> None:
    m = _tflite()
    gone = m.subgraphs[0].tensors.pop(0)  # r_nhwc
    found = correspondence.build(
        [correspondence.Located("r", gone, (0, 3, 1, 2))], Moved(), m, CONTRACT
    )
    assert "r" not in found and set(found) == {"x"}


def test_build_composes_the_record_perm_with_each_move() -> None:
    """onnx = T(bad, (0,2,1,3)) and bad = T(q, (0,1,3,2)): onnx axis i is q's axis
    step[perm[i]] = (0,3,1,2), so q holds the ONNX tensor channel-last."""
    m = _tflite()
    bad = next(x for x in m.subgraphs[0].tensors if x.name == "bad")
    q = tflite_graph.add_tensor(m, "q_nhwc", [1, 4, 3, 5], F32)
    moved = Moved()
    moved.add(bad, m.subgraphs[0].tensors[q], [0, 1, 3, 2])
    found = correspondence.build(
        [correspondence.Located("q", bad, (0, 2, 1, 3))], moved, m, CONTRACT
    )
    assert found["q"] == {"tflite": "q_nhwc", "channel_last": True, "fused": False}
