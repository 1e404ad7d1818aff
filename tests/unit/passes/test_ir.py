"""passes._ir: the onnx_ir helpers every pass uses: a load that never mutates the proto,
constants from initializers and Constant nodes (never from graph inputs), shapes, and splicing
that keeps graph output names and removes only unread nodes."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from bridge.passes import _ir
from bridge.runtime.feeds import random_feeds
from tests.unit.passes.conftest import build_model, contract_of, ort_outputs

W = np.arange(4, dtype=np.float32)


def _model() -> onnx.ModelProto:
    """x ─Add(w)→ a ─Relu→ y; a Constant c feeds Mul(a, c) → z; Identity keeps y's reader."""
    nodes = [
        helper.make_node("Add", ["x", "w"], ["a"], name="add"),
        helper.make_node("Relu", ["a"], ["y"], name="relu"),
        helper.make_node("Constant", [], ["c"], value=helper.make_tensor("c", 1, [4], W * 2)),
        helper.make_node("Mul", ["a", "c"], ["z"], name="mul"),
        helper.make_node("LeakyRelu", ["z"], ["l"], alpha=0.25, name="leaky"),
    ]
    return build_model(nodes, {"x": [1, 4]}, {"y": [1, 4], "l": [1, 4]}, {"w": W}, opset=13)


def _x(model: onnx.ModelProto) -> np.ndarray:
    """The input ort_outputs feeds."""
    return random_feeds(contract_of(model), seed=0)["x"]


def _nodes(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {n.name: n for n in model.graph.node if n.name}


def test_load_is_a_copy_and_save_round_trips() -> None:
    proto = _model()
    before = proto.SerializeToString()
    ir_model = _ir.load(proto)
    ir_model.graph.remove(next(n for n in ir_model.graph if n.name == "leaky"), safe=False)
    assert proto.SerializeToString() == before
    again = _ir.save(_ir.load(proto))
    assert [n.op_type for n in again.graph.node] == [n.op_type for n in proto.graph.node]
    assert _ir.opset(ir_model) == 13


def test_finish_returns_the_original_when_nothing_changed() -> None:
    proto = _model()
    unchanged = _ir.finish(proto, _ir.load(proto), 0, {"k": 1})
    assert unchanged.model is proto and not unchanged.modified and unchanged.hints == {"k": 1}
    changed = _ir.finish(proto, _ir.load(proto), 2)
    assert changed.model is not proto and changed.modified and changed.count == 2


def test_constants_shapes_and_attributes() -> None:
    g = _ir.load(_model()).graph
    nodes = {n.name: n for n in g}
    add, mul, leaky = nodes["add"], nodes["mul"], nodes["leaky"]
    np.testing.assert_array_equal(_ir.const_array(add.inputs[1]), W)
    np.testing.assert_array_equal(_ir.const_array(mul.inputs[1]), W * 2)
    assert _ir.const_array(add.inputs[0]) is None and _ir.const_array(None) is None
    assert _ir.static_shape(add.inputs[0]) == (1, 4) and _ir.rank(add.inputs[0]) == 2
    assert _ir.static_shape(None) is None and _ir.rank(None) is None
    assert _ir.attr(leaky, "alpha") == 0.25 and _ir.attr(leaky, "beta", 7) == 7
    assert _ir.is_onnx_op(leaky, "Relu", "LeakyRelu") and not _ir.is_onnx_op(leaky, "Relu")


def test_a_graph_input_with_a_default_initializer_is_not_a_constant() -> None:
    proto = _model()
    proto.graph.input.append(helper.make_tensor_value_info("w", 1, [4]))
    add = next(n for n in _ir.load(proto).graph if n.name == "add")
    assert _ir.const_array(add.inputs[1]) is None


def test_symbolic_dims_have_no_static_shape() -> None:
    proto = build_model([helper.make_node("Relu", ["x"], ["y"])], {"x": ["n", 4]}, {"y": ["n", 4]})
    relu = next(iter(_ir.load(proto).graph))
    assert _ir.static_shape(relu.inputs[0]) is None and _ir.rank(relu.inputs[0]) == 2


def test_sole_reader() -> None:
    nodes = {n.name: n for n in _ir.load(_model()).graph}
    assert _ir.sole_reader(nodes["mul"].outputs[0]) is nodes["leaky"]
    assert _ir.sole_reader(nodes["add"].outputs[0]) is None  # read by Relu and Mul
    assert _ir.sole_reader(nodes["relu"].outputs[0]) is None  # a graph output


def test_splice_onto_a_graph_output_keeps_its_name_and_numbers() -> None:
    """Drop the LeakyRelu by splicing its output l onto z: l keeps its name (now Mul's)."""
    proto = _model()
    model = _ir.load(proto)
    nodes = {n.name: n for n in model.graph}
    old, new = nodes["leaky"].outputs[0], nodes["mul"].outputs[0]
    assert _ir.can_splice(old, new)
    assert not _ir.can_splice(old, nodes["add"].inputs[0])  # a graph input cannot be renamed
    assert not _ir.can_splice(old, nodes["relu"].outputs[0])  # nor another graph output
    _ir.splice(model.graph, [nodes["leaky"]], old, new)
    out = _ir.save(model)
    assert [o.name for o in out.graph.output] == ["y", "l"]
    assert "leaky" not in _nodes(out) and _nodes(out)["mul"].output[0] == "l"
    x = _x(proto)
    got = ort_outputs(out)
    np.testing.assert_allclose(got["y"], np.maximum(x + W, 0), rtol=1e-6)
    np.testing.assert_allclose(got["l"], (x + W) * (2 * W), rtol=1e-6)  # no LeakyRelu left


def test_add_initializer_makes_names_unique() -> None:
    g = _ir.load(_model()).graph
    first = _ir.add_initializer(g, np.ones(2, np.float32), "w")
    second = _ir.add_initializer(g, np.ones(2, np.float32), "w")
    assert (first.name, second.name) == ("w_1", "w_2")
    np.testing.assert_array_equal(_ir.const_array(second), np.ones(2))


def test_set_constant_input_replaces_an_unshared_constant_under_its_name() -> None:
    model = _ir.load(_model())
    add = next(n for n in model.graph if n.name == "add")
    _ir.set_constant_input(model.graph, add, 1, W + 10, "w")
    assert add.inputs[1].name == "w" and list(model.graph.initializers) == ["w"]
    np.testing.assert_array_equal(_ir.const_array(add.inputs[1]), W + 10)
    got = ort_outputs(_ir.save(model))["y"]
    np.testing.assert_allclose(got, np.maximum(_x(_model()) + W + 10, 0), rtol=1e-6)


def test_drop_if_unused_keeps_read_initializers() -> None:
    model = _ir.load(_model())
    w = model.graph.initializers["w"]
    _ir.drop_if_unused(model.graph, w)
    assert "w" in model.graph.initializers
    add = next(n for n in model.graph if n.name == "add")
    add.replace_input_with(1, None)
    _ir.drop_if_unused(model.graph, w)
    assert "w" not in model.graph.initializers
    _ir.drop_if_unused(model.graph, None)  # no-op
