"""Read a QDQ ONNX file that bridge did not make: its I/O contract, the integer type of each
quantized tensor as the file stores it, and the facts bridge's own quantizer would have written.

The facts (`quantization_facts`) have the shape of `facts["quantization"]` from
`bridge.quantize.qdq`, so the lowering, the gate and the reports read an imported model like
one of bridge's own. uint8 tensors are recorded as int8 with the zero point shifted by −128
(the same real values, `bridge.lower.integer.qdq`); `stored_dtype` keeps what the file says.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx

from bridge.contract import IOContract, TensorSpec, guess_layout
from bridge.errors import ModelLoadError
from bridge.lower.integer.qdq import QdqModel
from bridge.modes import MODES
from bridge.qparams import QParams

_Q_OPS = ("QuantizeLinear", "DequantizeLinear")


def load(path: str | Path) -> tuple[onnx.ModelProto, bytes]:
    """The model in `path` and the file's bytes (ModelLoadError if unreadable or not QDQ)."""
    p = Path(path)
    try:
        data = p.read_bytes()
        model = onnx.load_from_string(data)
    except (OSError, onnx.onnx_cpp2py_export.checker.ValidationError) as e:
        raise ModelLoadError(f"cannot read {p}: {e}") from e
    except Exception as e:  # protobuf's DecodeError and friends
        raise ModelLoadError(f"{p} is not an ONNX model: {type(e).__name__}: {e}") from e
    if not any(n.op_type in _Q_OPS for n in model.graph.node):
        raise ModelLoadError(
            f"{p} has no QuantizeLinear/DequantizeLinear nodes; give a QDQ model, or convert "
            "the float model from PyTorch with quantize='int8'"
        )
    require_constant_params(model, p)
    return model, data


def require_constant_params(model: onnx.ModelProto, path: Path) -> None:
    """Every Q/DQ scale and zero point must be an initializer or a Constant node's output."""
    known = {i.name for i in model.graph.initializer}
    known |= {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    for node in model.graph.node:
        params = [x for x in node.input[1:3] if x] if node.op_type in _Q_OPS else []
        computed = [x for x in params if x not in known]
        if computed:
            raise ModelLoadError(
                f"{path}: {node.op_type} {node.name or node.output[0]!r} takes its scale or zero "
                f"point {computed[0]!r} from other nodes; fold the constants first (e.g. "
                "onnxsim, or onnx-graphsurgeon's fold_constants) so every Q/DQ parameter is stored"
            )


def contract(model: onnx.ModelProto) -> IOContract:
    """The graph's float inputs (initializers excluded) and outputs, layouts guessed by rank."""
    inits = {i.name for i in model.graph.initializer}
    inputs = tuple(_spec(v) for v in model.graph.input if v.name not in inits)
    return IOContract(inputs, tuple(_spec(v) for v in model.graph.output))


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    t = value.type.tensor_type
    shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
    dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
    return TensorSpec(value.name, shape, dtype, guess_layout(shape))


def stored_dtypes(model: onnx.ModelProto) -> dict[str, str]:
    """Q/DQ node output → the integer type its zero point (or default uint8) says the file uses."""
    zps = {i.name: i.data_type for i in model.graph.initializer}
    out: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type not in _Q_OPS:
            continue
        code = zps.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        out[node.output[0]] = (
            "uint8" if code is None else onnx.helper.tensor_dtype_to_np_dtype(code).name
        )
        if node.op_type == "QuantizeLinear":
            out.setdefault(node.input[0], out[node.output[0]])
    return out


def quantization_facts(qdq: QdqModel, stored: dict[str, str], mode: str) -> dict[str, Any]:
    """facts["quantization"] for an imported model (see the module docstring)."""
    tensors: dict[str, Any] = {}
    for name, qp in qdq.activations.items():  # under both names where an output was renamed
        fact = _fact("activation", qp, stored.get(qdq.qdq_name(name)))
        tensors[qdq.qdq_name(name)] = tensors[name] = fact
    for name, qp in qdq.constants.items():
        tensors[name] = _fact("constant", qp, stored.get(name))
    act = MODES.get(mode).activation_dtype
    return {
        "mode": mode,
        "source": "imported QDQ model",
        "observer": None,
        "activation_dtype": act,
        "weight_dtype": "int8",
        "bias_dtype": "int64" if act == "int16" else "int32",
        "io_dtype": "float32",
        "tensors": tensors,
    }


def _fact(kind: str, qp: QParams, stored: str | None) -> dict[str, Any]:
    info = np.iinfo(np.dtype(qp.dtype))
    lo = float((info.min - qp.zero_point[0]) * qp.scale[0])
    hi = float((info.max - qp.zero_point[0]) * qp.scale[0])
    return {
        **qp.to_dict(),
        "kind": kind,
        "stored_dtype": stored or qp.dtype,
        "range": [lo, hi],
        "observer": "imported",
    }
