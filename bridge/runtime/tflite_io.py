"""Read, edit and write TFLite flatbuffers through the schema's object API."""

from __future__ import annotations

from collections import Counter
from typing import Any

import flatbuffers
import numpy as np

from bridge.errors import ModelLoadError

#: TFLite TensorType enum value → numpy dtype.
TENSOR_DTYPES: dict[int, np.dtype] = {
    0: np.dtype(np.float32),
    1: np.dtype(np.float16),
    2: np.dtype(np.int32),
    3: np.dtype(np.uint8),
    4: np.dtype(np.int64),
    6: np.dtype(np.bool_),
    7: np.dtype(np.int16),
    9: np.dtype(np.int8),
}
DTYPE_CODES: dict[np.dtype, int] = {v: k for k, v in TENSOR_DTYPES.items()}


def schema() -> Any:
    """The TFLite schema module (flatbuffers object API), imported lazily."""
    import ai_edge_litert.schema_py_generated as s

    return s


def holds_data(model: Any, tensor: Any) -> bool:
    """Whether `tensor` is a constant: its buffer holds data (a weight, or a constant output)."""
    if not 0 < tensor.buffer < len(model.buffers):
        return False
    buffer = model.buffers[tensor.buffer]
    return (buffer.data is not None and len(buffer.data) > 0) or buffer.size > 0


def load(data: bytes) -> Any:
    """Parse flatbuffer bytes into a mutable `ModelT`."""
    s = schema()
    try:
        if not s.Model.ModelBufferHasIdentifier(data, 0):
            raise ModelLoadError("not a TFLite flatbuffer (file identifier 'TFL3' missing)")
        return s.ModelT.InitFromPackedBuf(bytearray(data), 0)
    except ModelLoadError:
        raise
    except Exception as e:  # flatbuffers raises struct/index errors on truncated input
        raise ModelLoadError(f"corrupt or truncated TFLite flatbuffer: {e}") from e


def check_indices(model: Any) -> None:
    """Raise ModelLoadError unless every index in `model` (op codes, tensors, buffers) points
    inside its table: LiteRT does not check, and crashes on a corrupted file."""
    if not model.subgraphs:
        raise ModelLoadError("no subgraphs")
    n_codes, n_buffers = len(model.operatorCodes or []), len(model.buffers or [])
    for g, sg in enumerate(model.subgraphs):
        tensors = sg.tensors or []
        for t in tensors:
            if not 0 <= t.buffer < max(n_buffers, 1):
                raise ModelLoadError(f"subgraph {g}: tensor buffer index {t.buffer} out of range")
        used = [sg.inputs, sg.outputs]
        for op in sg.operators or []:
            if not 0 <= op.opcodeIndex < n_codes:
                raise ModelLoadError(f"subgraph {g}: operator code {op.opcodeIndex} out of range")
            used += [op.inputs, op.outputs]
        for idx in used:
            if idx is not None and len(idx) and (min(idx) < -1 or max(idx) >= len(tensors)):
                raise ModelLoadError(
                    f"subgraph {g}: tensor index out of range in {[int(i) for i in idx]}"
                )


def save(model: Any) -> bytes:
    """Serialise a `ModelT` to flatbuffer bytes with the TFL3 identifier."""
    builder = flatbuffers.Builder(1024 * 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def builtin_names() -> dict[int, str]:
    """BuiltinOperator enum value → name (e.g. 3 → 'CONV_2D')."""
    ops = schema().BuiltinOperator
    return {v: k for k, v in vars(ops).items() if not k.startswith("_")}


def op_name(model: Any, op: Any) -> str:
    """The builtin name of an operator (custom ops give their custom code)."""
    code = model.operatorCodes[op.opcodeIndex]
    value = max(code.builtinCode, code.deprecatedBuiltinCode)
    if code.customCode:
        return code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
    return builtin_names().get(value, str(value))


def op_histogram(data: bytes) -> Counter[str]:
    """Count of each operator type in the main subgraph."""
    model = load(data)
    return Counter(op_name(model, op) for op in model.subgraphs[0].operators)


def tensor_name(tensor: Any) -> str:
    name = tensor.name
    return name.decode(errors="replace") if isinstance(name, bytes) else str(name)


def buffer_array(model: Any, tensor: Any) -> np.ndarray | None:
    """The constant data of a tensor as a numpy array, or None for activations."""
    buf = model.buffers[tensor.buffer]
    if buf.data is None or len(buf.data) == 0:
        return None
    dtype = TENSOR_DTYPES[tensor.type]
    raw = np.asarray(buf.data, dtype=np.uint8).tobytes()
    shape = list(tensor.shape) if tensor.shape is not None else []
    return np.frombuffer(raw, dtype=dtype).reshape(shape)
