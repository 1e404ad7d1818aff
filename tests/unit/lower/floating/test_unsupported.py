"""unsupported: every way onnx2tf fails to lower an op becomes an UnsupportedOpError that names
the ONNX node and op and says what to rewrite."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from bridge.errors import UnsupportedOpError
from bridge.lower import tflite_graph
from bridge.lower.floating import unsupported
from bridge.runtime import tflite_io
from tests.unit.lower.tflite_models import empty_model

F32 = np.dtype(np.float32)


def _onnx() -> onnx.ModelProto:
    """x ─LpPool (node "pool")→ p ─Relu (node "pool_relu")→ y."""
    nodes = [
        helper.make_node("LpPool", ["x"], ["p"], name="pool", kernel_shape=[2, 2]),
        helper.make_node("Relu", ["p"], ["y"], name="pool_relu"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 3, 3])
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y]))


def _custom(model: Any, code: str, out_name: str) -> None:
    """Append a CUSTOM op `code` writing a new tensor `out_name`."""
    s = tflite_io.schema()
    oc = s.OperatorCodeT()
    oc.builtinCode = oc.deprecatedBuiltinCode = s.BuiltinOperator.CUSTOM
    oc.customCode, oc.version = code.encode(), 1
    model.operatorCodes.append(oc)
    x = tflite_graph.add_tensor(model, f"{out_name}_in", [4], F32)
    y = tflite_graph.add_tensor(model, out_name, [4], F32)
    op = s.OperatorT()
    op.opcodeIndex = len(model.operatorCodes) - 1
    op.inputs, op.outputs = np.array([x], np.int32), np.array([y], np.int32)
    model.subgraphs[0].operators.append(op)


def test_suggestions_known_generic_and_custom_domain() -> None:
    assert unsupported.suggestion("LpPool") == unsupported.SUGGESTIONS["LpPool"]
    assert unsupported.suggestion("Hardmax") == unsupported.GENERIC_SUGGESTION
    assert "custom op of domain 'com.acme'" in unsupported.suggestion("LpPool", "com.acme")


def test_error_for_node_names_node_op_and_fix() -> None:
    node = _onnx().graph.node[0]
    err = unsupported.error_for_node(node, "no kernel")
    assert isinstance(err, UnsupportedOpError) and (err.node, err.op) == ("pool", "LpPool")
    assert str(err) == (
        "cannot lower ONNX node 'pool' (op LpPool) to TFLite: no kernel. "
        f"To fix: {unsupported.SUGGESTIONS['LpPool']}."
    )
    node.domain = "com.acme"
    assert "(op com.acme::LpPool)" in str(unsupported.error_for_node(node))


def test_messages_are_traced_to_their_node() -> None:
    m = _onnx()
    assert unsupported.node_in_message(m, "failed at node=pool: shape").name == "pool"
    assert unsupported.node_in_message(m, "error in 'pool_relu' output").name == "pool_relu"
    assert unsupported.node_in_message(m, "something else went wrong") is None
    assert unsupported.op_type_in_message(m, "bad op=Relu here").name == "pool_relu"
    assert unsupported.op_type_in_message(m, "bad op=Conv here") is None


def test_custom_ops_become_one_error_each_naming_the_onnx_node() -> None:
    tfl = empty_model()
    _custom(tfl, "ONNX_LPPOOL", "p")  # found by its output name
    _custom(tfl, "ONNX_LPPOOL", "renamed")  # found by op type
    _custom(tfl, "ONNX_STFT", "spec")  # no node behind it
    relu_in = tflite_graph.add_tensor(tfl, "r", [4], F32)
    tfl.subgraphs[0].operators.append(tflite_graph.make_op(tfl, "RELU", [relu_in], [relu_in]))
    errors = unsupported.custom_ops(tfl, _onnx())
    assert [(e.node, e.op) for e in errors] == [
        ("pool", "LpPool"),
        ("pool", "LpPool"),
        (None, "STFT"),
    ]
    assert "CUSTOM op 'ONNX_LPPOOL'" in str(errors[0])
    assert str(errors[2]).startswith("cannot lower the tensor(s) ['spec'] to TFLite")
    assert unsupported.custom_ops(empty_model(), _onnx()) == []
