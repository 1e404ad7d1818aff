"""Lowering failures become typed errors that name the ONNX node and suggest a fix."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from bridge.artifact import OnnxArtifact
from bridge.contract import IOContract, TensorSpec
from bridge.errors import LoweringError, UnsupportedOpError
from bridge.lower import lower
from bridge.lower.floating import onnx2tf_driver


def _artifact(
    node: onnx.NodeProto, shape: list[int], *, inits=(), domain: str = ""
) -> OnnxArtifact:
    """x ─Relu→ r ─node→ y, with `node` reading "r" and writing "y"."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="relu0"), node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=list(inits),
    )
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=opsets)
    contract = IOContract(
        (TensorSpec("x", tuple(shape), "float32"),), (TensorSpec("y", tuple(shape), "float32"),)
    )
    return OnnxArtifact(model, contract)


def test_custom_domain_op_names_the_node() -> None:
    node = helper.make_node("FancyOp", ["r"], ["y"], name="my_fancy_node", domain="com.example")
    art = _artifact(node, [1, 4, 8], domain="com.example")
    with pytest.raises(UnsupportedOpError, match="my_fancy_node") as info:
        lower(art, mode="fp32")
    assert info.value.node == "my_fancy_node"
    assert info.value.op == "FancyOp"
    assert "com.example" in str(info.value) and "To fix" in str(info.value)


def test_standard_op_without_lowering_suggests_a_decomposition() -> None:
    # onnx2tf 2.6.9 emits an unrunnable CUSTOM "ONNX_LPPOOL" op for this.
    node = helper.make_node("LpPool", ["r"], ["y"], name="pool3", kernel_shape=[2], p=3)
    art = _artifact(node, [1, 4, 8])
    with pytest.raises(UnsupportedOpError, match="pool3") as info:
        lower(art, mode="fp32")
    assert info.value.op == "LpPool"
    assert "AvgPool" in str(info.value)


def test_onnx2tf_exception_naming_a_node() -> None:
    # onnx2tf raises NotImplementedError("MaxPool dilations must be [1,1] ... op=<node name>").
    node = helper.make_node(
        "MaxPool", ["r"], ["y"], name="dilated_pool", kernel_shape=[3, 3], dilations=[2, 2]
    )
    art = _artifact(node, [1, 4, 8, 8])
    with pytest.raises(UnsupportedOpError, match="dilated_pool") as info:
        lower(art, mode="fp32")
    assert info.value.op == "MaxPool"
    assert isinstance(info.value.__cause__, NotImplementedError)


def test_onnx2tf_sys_exit_becomes_lowering_error(monkeypatch) -> None:
    import onnx2tf

    def fake_convert(**kwargs) -> None:
        print("\x1b[31mERROR:\x1b[0m The specified *.onnx file is broken in a new way.")
        raise SystemExit(1)

    monkeypatch.setattr(onnx2tf, "convert", fake_convert)
    node = helper.make_node("Relu", ["r"], ["y"], name="relu1")
    with pytest.raises(LoweringError, match="broken in a new way") as info:
        onnx2tf_driver.run_onnx2tf(_artifact(node, [1, 4]).model, keep_shape_inputs=["x"])
    assert not isinstance(info.value, UnsupportedOpError)
    assert isinstance(info.value.__cause__, SystemExit)
