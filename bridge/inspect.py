"""Describe a .tflite or .onnx file: inputs, outputs, operators, tensor types and size."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import onnx

from bridge.errors import ModelLoadError
from bridge.runtime import tflite_io


def describe(path: str | Path) -> str:
    """A short multi-line description; ModelLoadError if the file is missing or corrupt.

    A bridge output folder describes its model.tflite.
    """
    p = Path(path)
    if p.is_dir() and (p / "model.tflite").is_file():
        p = p / "model.tflite"
    elif p.is_dir():
        raise ModelLoadError(f"{p} is a folder with no model.tflite; give a .tflite or .onnx file")
    if not p.is_file():
        raise ModelLoadError(f"{p} not found")
    data = p.read_bytes()
    if p.suffix == ".tflite":
        return _describe_tflite(p, data)
    if p.suffix == ".onnx":
        return _describe_onnx(p, data)
    raise ModelLoadError(f"{p}: unknown file type; expected .tflite or .onnx")


def _describe_tflite(p: Path, data: bytes) -> str:
    try:
        model = tflite_io.load(data)
        tflite_io.check_indices(model)
    except ModelLoadError as e:
        raise ModelLoadError(f"{p}: {e}") from e
    sg = model.subgraphs[0]
    lines = [f"{p}: TFLite, {len(data) / 1e6:.2f} MB, {len(sg.operators)} operators"]
    for kind, idx in (("input", sg.inputs), ("output", sg.outputs)):
        for i in idx:
            t = sg.tensors[i]
            dtype = tflite_io.TENSOR_DTYPES.get(t.type, t.type)
            shape = [int(d) for d in t.shape]
            lines.append(f"  {kind} {tflite_io.tensor_name(t)}: {shape} {dtype}")
    ops = Counter(tflite_io.op_name(model, op) for op in sg.operators)
    lines.append("  ops: " + ", ".join(f"{k} {v}" for k, v in ops.most_common()))
    types = Counter(str(tflite_io.TENSOR_DTYPES.get(t.type, t.type)) for t in sg.tensors)
    lines.append("  tensor types: " + ", ".join(f"{k} {v}" for k, v in types.most_common()))
    return "\n".join(lines)


def _describe_onnx(p: Path, data: bytes) -> str:
    try:
        model = onnx.load_from_string(data)
        onnx.checker.check_model(model)
    except Exception as e:  # protobuf's DecodeError, onnx's ValidationError
        raise ModelLoadError(f"{p} is not a valid ONNX model: {e}") from e
    g = model.graph
    lines = [
        f"{p}: ONNX opset {model.opset_import[0].version}, {len(data) / 1e6:.2f} MB, "
        f"{len(g.node)} nodes"
    ]
    for kind, vals in (("input", g.input), ("output", g.output)):
        for v in vals:
            dims = [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]
            lines.append(f"  {kind} {v.name}: {dims}")
    ops = Counter(n.op_type for n in g.node)
    lines.append("  ops: " + ", ".join(f"{k} {v}" for k, v in ops.most_common()))
    return "\n".join(lines)
