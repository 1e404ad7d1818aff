"""Hand-built TFLite flatbuffers through the schema's object API alone (no bridge.lower), for
the runtime and verify unit tests."""

from __future__ import annotations

from typing import Any

import numpy as np

from bridge.runtime import tflite_io


def empty_model() -> Any:
    """A `ModelT` with one empty subgraph and the empty buffer 0."""
    s = tflite_io.schema()
    model = s.ModelT()
    model.version = 3
    model.operatorCodes, model.buffers = [], [s.BufferT()]
    sg = s.SubGraphT()
    sg.tensors, sg.operators, sg.inputs, sg.outputs = [], [], [], []
    model.subgraphs = [sg]
    return model


def tensor(
    model: Any,
    name: str,
    shape: list[int],
    dtype: Any,
    *,
    data: Any = None,
    qparams: tuple[Any, Any] | None = None,
) -> int:
    """Append a tensor (a constant with `data`; quantized with (scales, zero points))."""
    s = tflite_io.schema()
    t = s.TensorT()
    t.name, t.shape = name, np.asarray(shape, np.int32)
    t.type = tflite_io.DTYPE_CODES[np.dtype(dtype)]
    t.buffer = 0
    if data is not None:
        buf = s.BufferT()
        raw = np.ascontiguousarray(data, dtype=dtype).tobytes()
        buf.data = np.frombuffer(raw, np.uint8).copy()
        model.buffers.append(buf)
        t.buffer = len(model.buffers) - 1
    if qparams is not None:
        q = s.QuantizationParametersT()
        q.scale = np.atleast_1d(np.asarray(qparams[0], np.float32))
        q.zeroPoint = np.atleast_1d(np.asarray(qparams[1], np.int64))
        t.quantization = q
    model.subgraphs[0].tensors.append(t)
    return len(model.subgraphs[0].tensors) - 1


def op(model: Any, builtin: str, inputs: list[int], outputs: list[int]) -> Any:
    """Append a builtin operator (default options) to the main subgraph and return it."""
    s = tflite_io.schema()
    code = getattr(s.BuiltinOperator, builtin)
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    if code not in codes:
        oc = s.OperatorCodeT()
        oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), 1
        model.operatorCodes.append(oc)
        codes.append(code)
    o = s.OperatorT()
    o.opcodeIndex = codes.index(code)
    o.inputs, o.outputs = np.asarray(inputs, np.int32), np.asarray(outputs, np.int32)
    model.subgraphs[0].operators.append(o)
    return o


def relu_chain(n: int, *, shape: tuple[int, ...] = (1, 8)) -> bytes:
    """x ─RELU→ r0 ─RELU→ ... ─RELU→ r{n-1}, a float model LiteRT runs."""
    m = empty_model()
    prev = x = tensor(m, "x", list(shape), np.float32)
    for i in range(n):
        out = tensor(m, f"r{i}", list(shape), np.float32)
        op(m, "RELU", [prev], [out])
        prev = out
    m.subgraphs[0].inputs, m.subgraphs[0].outputs = [x], [prev]
    return tflite_io.save(m)
