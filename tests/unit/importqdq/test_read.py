"""importqdq.read: loading refuses what is not a QDQ model with stored parameters; the contract
leaves initializers out; the file's integer types are kept; the facts shift uint8 to int8 with
the same real range and record a renamed output under both names.

The model: x ─Q(0.1, uint8 128)─DQ→ Relu → r ─Q(0.05, int8 −3)─DQ→ y.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from bridge.errors import ModelLoadError
from bridge.importqdq import read
from bridge.lower.integer.qdq import read_qdq

S_X, S_R = np.float32(0.1), np.float32(0.05)


def _qdq(*, computed_scale: bool = False, extra_input: bool = False) -> onnx.ModelProto:
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"], name="q_x"),
        helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
        helper.make_node("Relu", ["xd"], ["r"]),
        helper.make_node("QuantizeLinear", ["r", "sr", "zr"], ["rq"]),
        helper.make_node("DequantizeLinear", ["rq", "sr", "zr"], ["y"]),
    ]
    inits = {"sx": S_X, "zx": np.uint8(128), "sr": S_R, "zr": np.int8(-3)}
    if computed_scale:
        nodes.insert(0, helper.make_node("Identity", ["s0"], ["sx"]))
        inits["s0"] = inits.pop("sx")
    inputs = [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 4, 4])]
    if extra_input:  # an input with a default value (an initializer of the same name)
        inputs.append(helper.make_tensor_value_info("sr", onnx.TensorProto.FLOAT, []))
    graph = helper.make_graph(
        nodes,
        "qdq",
        inputs,
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3, 4, 4])],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _save(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def test_load_returns_the_model_and_its_bytes(tmp_path: Path) -> None:
    path = _save(_qdq(), tmp_path / "m.onnx")
    model, data = read.load(path)
    assert data == path.read_bytes()
    assert model.graph.node[0].op_type == "QuantizeLinear"


def test_load_refuses_missing_corrupt_and_float_files(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"cannot read .*missing\.onnx"):
        read.load(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\xff\x00junk")
    with pytest.raises(ModelLoadError, match=r"junk\.onnx is not an ONNX model"):
        read.load(tmp_path / "junk.onnx")
    relu = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "f",
        [helper.make_tensor_value_info("x", 1, [1])],
        [helper.make_tensor_value_info("y", 1, [1])],
    )
    path = _save(helper.make_model(relu), tmp_path / "float.onnx")
    with pytest.raises(ModelLoadError, match="has no QuantizeLinear/DequantizeLinear nodes"):
        read.load(path)


def test_a_computed_scale_is_refused_naming_the_node(tmp_path: Path) -> None:
    path = _save(_qdq(computed_scale=True), tmp_path / "c.onnx")
    with pytest.raises(ModelLoadError) as e:
        read.load(path)
    assert "QuantizeLinear 'q_x' takes its scale or zero point 'sx' from other nodes" in str(
        e.value
    )
    assert str(path) in str(e.value)


def test_contract_excludes_initializers_and_guesses_layout() -> None:
    c = read.contract(_qdq(extra_input=True))
    assert [(t.name, t.shape, t.dtype, t.layout) for t in c.inputs] == [
        ("x", (1, 3, 4, 4), "float32", "NCHW")
    ]
    assert [t.name for t in c.outputs] == ["y"]


def test_stored_dtypes_follow_each_zero_point() -> None:
    stored = read.stored_dtypes(_qdq())
    assert stored == {"x": "uint8", "xq": "uint8", "xd": "uint8", "r": "int8", "rq": "int8",
                      "y": "int8"}  # fmt: skip


def test_a_q_without_zero_point_is_uint8() -> None:
    model = _qdq()
    del model.graph.node[0].input[2]
    assert read.stored_dtypes(model)["xq"] == "uint8"


def test_facts_shift_uint8_and_keep_the_real_range() -> None:
    model = _qdq()
    facts = read.quantization_facts(read_qdq(model), read.stored_dtypes(model), "int8")
    assert (facts["mode"], facts["bias_dtype"], facts["source"]) == (
        "int8",
        "int32",
        "imported QDQ model",
    )
    x = facts["tensors"]["x"]
    assert (x["dtype"], x["stored_dtype"], x["zero_point"], x["kind"]) == (
        "int8",
        "uint8",
        [0],
        "activation",
    )
    assert x["range"] == [(0 - 128) * float(S_X), (255 - 128) * float(S_X)]  # uint8's reals
    y, r = facts["tensors"]["y"], facts["tensors"]["r"]
    assert y is r  # the renamed output under both names
    assert (r["zero_point"], r["stored_dtype"]) == ([-3], "int8")
    assert r["range"] == [(-128 + 3) * float(S_R), (127 + 3) * float(S_R)]


def test_int16x8_facts_have_int64_biases() -> None:
    model = _qdq()
    facts = read.quantization_facts(read_qdq(model), read.stored_dtypes(model), "int16x8")
    assert facts["activation_dtype"] == "int16" and facts["bias_dtype"] == "int64"
