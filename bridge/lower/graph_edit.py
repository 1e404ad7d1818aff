"""Small edits on a parsed TFLite model (`ModelT` from `tflite_io.load`), main subgraph only.

The rewrites in this package (boundary transposes, transpose cancelling, float16 weights, I/O
renaming) share these helpers so that each of them stays a few lines of graph logic.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from bridge.runtime import tflite_io


def consumers(subgraph: Any) -> dict[int, list[int]]:
    """Tensor index → indices of the operators that read it."""
    found: dict[int, list[int]] = defaultdict(list)
    for i, op in enumerate(subgraph.operators):
        for t in op.inputs if op.inputs is not None else ():
            if t >= 0:
                found[int(t)].append(i)
    return found


def producers(subgraph: Any) -> dict[int, int]:
    """Tensor index → index of the operator that writes it."""
    return {
        int(t): i
        for i, op in enumerate(subgraph.operators)
        for t in (op.outputs if op.outputs is not None else ())
    }


def opcode_index(model: Any, builtin: str, *, version: int = 1) -> int:
    """Index of the operator code for builtin op `builtin` (e.g. "TRANSPOSE"), added if missing."""
    s = tflite_io.schema()
    code = getattr(s.BuiltinOperator, builtin)
    for i, oc in enumerate(model.operatorCodes):
        if max(oc.builtinCode, oc.deprecatedBuiltinCode) == code and not oc.customCode:
            oc.version = max(oc.version, version)
            return i
    oc = s.OperatorCodeT()
    oc.builtinCode = code
    oc.deprecatedBuiltinCode = min(code, 127)  # the int8 field saturates at PLACEHOLDER
    oc.version = version
    model.operatorCodes.append(oc)
    return len(model.operatorCodes) - 1


def add_buffer(model: Any, data: bytes | None) -> int:
    """Append a buffer holding `data` (None for an activation) and return its index."""
    buf = tflite_io.schema().BufferT()
    if data:
        buf.data = np.frombuffer(data, dtype=np.uint8).copy()
    model.buffers.append(buf)
    return len(model.buffers) - 1


def add_tensor(
    model: Any,
    name: str,
    shape: list[int],
    dtype: np.dtype,
    *,
    data: np.ndarray | None = None,
    shape_signature: list[int] | None = None,
) -> int:
    """Append a tensor to the main subgraph (a constant when `data` is given); return its index."""
    s = tflite_io.schema()
    sg = model.subgraphs[0]
    t = s.TensorT()
    t.name = name
    t.shape = np.asarray(shape, dtype=np.int32)
    if shape_signature is not None and any(d < 0 for d in shape_signature):
        t.shapeSignature = np.asarray(shape_signature, dtype=np.int32)
    t.type = tflite_io.DTYPE_CODES[np.dtype(dtype)]
    raw = None if data is None else np.ascontiguousarray(data, dtype=dtype).tobytes()
    t.buffer = add_buffer(model, raw) if raw is not None else empty_buffer(model)
    sg.tensors.append(t)
    return len(sg.tensors) - 1


def empty_buffer(model: Any) -> int:
    """Buffer 0 is the shared empty buffer by convention; create it if the model lacks one."""
    if model.buffers and (model.buffers[0].data is None or len(model.buffers[0].data) == 0):
        return 0
    return add_buffer(model, None)


def make_op(model: Any, builtin: str, inputs: list[int], outputs: list[int], **kw: Any) -> Any:
    """An `OperatorT` for builtin op `builtin` (not yet inserted into the subgraph).

    Keyword arguments: `version` (operator code version, default 1) and `options`, a
    `(BuiltinOptions enum name, options object)` pair.
    """
    s = tflite_io.schema()
    op = s.OperatorT()
    op.opcodeIndex = opcode_index(model, builtin, version=kw.get("version", 1))
    op.inputs = np.asarray(inputs, dtype=np.int32)
    op.outputs = np.asarray(outputs, dtype=np.int32)
    if "options" in kw:
        kind, obj = kw["options"]
        op.builtinOptionsType = getattr(s.BuiltinOptions, kind)
        op.builtinOptions = obj
    return op


def transpose_op(model: Any, src: int, dst: int, perm: list[int]) -> Any:
    """A TRANSPOSE operator writing `dst` = transpose(`src`, `perm`), with its perm constant."""
    sg = model.subgraphs[0]
    name = f"{tflite_io.tensor_name(sg.tensors[dst])}_perm"
    perm_idx = add_tensor(model, name, [len(perm)], np.dtype(np.int32), data=np.array(perm))
    opts = tflite_io.schema().TransposeOptionsT()
    return make_op(model, "TRANSPOSE", [src, perm_idx], [dst], options=("TransposeOptions", opts))


def const_array(model: Any, tensor_index: int) -> np.ndarray | None:
    """The constant value of a tensor of the main subgraph, or None for an activation."""
    return tflite_io.buffer_array(model, model.subgraphs[0].tensors[tensor_index])


def shape_of(tensor: Any) -> list[int]:
    """The tensor's shape signature (-1 for dynamic dimensions), falling back to its shape."""
    sig = tensor.shapeSignature
    if sig is not None and len(sig) == len(tensor.shape if tensor.shape is not None else []):
        return [int(d) for d in sig]
    return [int(d) for d in (tensor.shape if tensor.shape is not None else [])]


def replace_input(subgraph: Any, old: int, new: int, *, op_indices: list[int]) -> None:
    """Make the operators `op_indices` read tensor `new` wherever they read `old`."""
    for i in op_indices:
        op = subgraph.operators[i]
        op.inputs = np.asarray([new if t == old else t for t in op.inputs], dtype=np.int32)


def remove_ops(subgraph: Any, indices: set[int]) -> None:
    """Delete operators by index (their tensors stay; `prune_tensors` removes unused ones)."""
    subgraph.operators = [op for i, op in enumerate(subgraph.operators) if i not in indices]


def prune_tensors(model: Any) -> None:
    """Drop tensors of the main subgraph that no operator, input, output or signature uses."""
    sg = model.subgraphs[0]
    used = {int(t) for t in sg.inputs} | {int(t) for t in sg.outputs}
    for op in sg.operators:
        used.update(int(t) for t in op.inputs if t >= 0)
        used.update(int(t) for t in op.outputs)
        if op.intermediates is not None:
            used.update(int(t) for t in op.intermediates)
    remap = {old: new for new, old in enumerate(sorted(used))}
    sg.tensors = [t for i, t in enumerate(sg.tensors) if i in remap]

    def fix(indices: Any) -> np.ndarray:
        return np.asarray([remap[int(t)] if t >= 0 else t for t in indices], dtype=np.int32)

    sg.inputs, sg.outputs = fix(sg.inputs), fix(sg.outputs)
    for op in sg.operators:
        op.inputs, op.outputs = fix(op.inputs), fix(op.outputs)
        if op.intermediates is not None:
            op.intermediates = fix(op.intermediates)
    for sig in model.signatureDefs or []:
        if sig.subgraphIndex == 0:
            for tm in list(sig.inputs or []) + list(sig.outputs or []):
                tm.tensorIndex = remap[int(tm.tensorIndex)]


def drop_metadata(model: Any, name: str) -> bool:
    """Remove the metadata entry `name` (and empty its buffer); True if it was there."""
    kept, dropped = [], False
    for md in model.metadata or []:
        md_name = md.name.decode() if isinstance(md.name, bytes) else md.name
        if md_name == name:
            model.buffers[md.buffer].data = None
            dropped = True
        else:
            kept.append(md)
    model.metadata = kept or None
    return dropped
