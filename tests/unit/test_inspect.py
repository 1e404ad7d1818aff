"""inspect.describe: inputs, outputs, operator and tensor-type counts of a .tflite, an .onnx or a
bridge folder; missing, corrupt and unknown files are a ModelLoadError naming the path."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from onnx import helper

from bridge.errors import ModelLoadError
from bridge.inspect import describe
from tests.unit.runtime.tiny_tflite import relu_chain


def test_tflite_description(tmp_path: Path) -> None:
    path = tmp_path / "m.tflite"
    data = relu_chain(3, shape=(1, 8))
    path.write_bytes(data)
    lines = describe(path).splitlines()
    assert lines == [
        f"{path}: TFLite, {len(data) / 1e6:.2f} MB, 3 operators",
        "  input x: [1, 8] float32",
        "  output r2: [1, 8] float32",
        "  ops: RELU 3",
        "  tensor types: float32 4",
    ]


def test_a_bridge_folder_describes_its_tflite(tmp_path: Path) -> None:
    (tmp_path / "model.tflite").write_bytes(relu_chain(1))
    assert describe(tmp_path).startswith(f"{tmp_path / 'model.tflite'}: TFLite")


def test_onnx_description(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Relu", ["a"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", 1, ["batch", 4])],
        [helper.make_tensor_value_info("y", 1, ["batch", 4])],
    )
    path = tmp_path / "m.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path.write_bytes(model.SerializeToString())
    lines = describe(path).splitlines()
    assert lines[0].startswith(f"{path}: ONNX opset 17, ") and lines[0].endswith(" 2 nodes")
    assert lines[1:] == ["  input x: ['batch', 4]", "  output y: ['batch', 4]", "  ops: Relu 2"]


def test_unreadable_paths_are_model_load_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        ModelLoadError, match=re.escape(f"{empty} is a folder with no model.tflite")
    ):
        describe(empty)
    with pytest.raises(ModelLoadError, match=re.escape("nope.tflite not found")):
        describe(tmp_path / "nope.tflite")
    (tmp_path / "m.txt").write_text("x")
    with pytest.raises(
        ModelLoadError, match=re.escape("unknown file type; expected .tflite or .onnx")
    ):
        describe(tmp_path / "m.txt")


def test_corrupt_files_name_the_path(tmp_path: Path) -> None:
    bad_tfl = tmp_path / "bad.tflite"
    bad_tfl.write_bytes(relu_chain(2)[:40])
    with pytest.raises(ModelLoadError, match="^" + re.escape(f"{bad_tfl}: ")):
        describe(bad_tfl)
    bad_onnx = tmp_path / "bad.onnx"
    bad_onnx.write_bytes(b"\x08\x07garbage")
    with pytest.raises(
        ModelLoadError, match="^" + re.escape(f"{bad_onnx} is not a valid ONNX model")
    ):
        describe(bad_onnx)
