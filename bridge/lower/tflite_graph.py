"""The one TFLite editor of the lowering: edits on the main subgraph of a parsed `ModelT`.

Two views of the same helpers:
- free functions on the model, by operator index (the float rewrites: boundary transposes,
  transpose cancelling, float16 weights, I/O renaming), each a few lines of graph logic;
- `Graph`, an operator list kept in execution order and written back by `commit()` (the
  integer rewrites, which insert and reorder many operators before pruning once).

Operator codes: `opcode_index` raises a shared code's version to the highest one asked for (a
higher version is a superset), while `Graph.opcode` keeps one code per (op, version), since the
integer rewrite gives individual operators their own kernel version.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from bridge.runtime import tflite_io

#: Option tables `Graph.new_op` gives by default: op → (options class, union field).
_OPTIONS = {
    "QUANTIZE": ("QuantizeOptionsT", "QuantizeOptions"),
    "DEQUANTIZE": ("DequantizeOptionsT", "DequantizeOptions"),
    "RESHAPE": ("ReshapeOptionsT", "ReshapeOptions"),
    "FULLY_CONNECTED": ("FullyConnectedOptionsT", "FullyConnectedOptions"),
}


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


def opcode_index(model: Any, builtin: str, *, version: int = 1, exact: bool = False) -> int:
    """Index of the operator code for builtin op `builtin` (e.g. "TRANSPOSE"), added if missing.

    By default an existing code is reused and its version raised to `version`; with `exact`
    only a code of exactly `version` is reused.
    """
    s = tflite_io.schema()
    code = getattr(s.BuiltinOperator, builtin)
    for i, oc in enumerate(model.operatorCodes):
        if max(oc.builtinCode, oc.deprecatedBuiltinCode) != code or oc.customCode:
            continue
        if not exact:
            oc.version = max(oc.version, version)
            return i
        if oc.version == version:
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
    if data is not None:
        buf.data = np.frombuffer(data, dtype=np.uint8).copy()
    model.buffers.append(buf)
    return len(model.buffers) - 1


def empty_buffer(model: Any) -> int:
    """Buffer 0 is the shared empty buffer by convention; create it if the model lacks one."""
    if model.buffers and (model.buffers[0].data is None or len(model.buffers[0].data) == 0):
        return 0
    return add_buffer(model, None)


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
    t.buffer = add_buffer(model, raw) if raw else empty_buffer(model)
    sg.tensors.append(t)
    return len(sg.tensors) - 1


def make_op(
    model: Any,
    builtin: str,
    inputs: list[int],
    outputs: list[int],
    *,
    version: int = 1,
    options: tuple[str, Any] | None = None,
    exact: bool = False,
) -> Any:
    """An `OperatorT` for builtin op `builtin` (not yet inserted into the subgraph).

    `options` is a `(BuiltinOptions enum name, options object)` pair; `version` and `exact`
    pick the operator code as `opcode_index` does.
    """
    s = tflite_io.schema()
    op = s.OperatorT()
    op.opcodeIndex = opcode_index(model, builtin, version=version, exact=exact)
    op.inputs = np.asarray(inputs, dtype=np.int32)
    op.outputs = np.asarray(outputs, dtype=np.int32)
    if options is not None:
        kind, obj = options
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


def _rewire(ops: Any, old: int, new: int) -> None:
    for op in ops:
        op.inputs = np.asarray([new if t == old else t for t in op.inputs], dtype=np.int32)


def replace_input(subgraph: Any, old: int, new: int, *, op_indices: list[int]) -> None:
    """Make the operators `op_indices` read tensor `new` wherever they read `old`."""
    _rewire((subgraph.operators[i] for i in op_indices), old, new)


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


def prune_buffers(model: Any) -> None:
    """Drop buffers no tensor or metadata entry uses (buffer 0, the empty one, stays)."""
    used = {0}
    for sg in model.subgraphs:
        used.update(t.buffer for t in sg.tensors)
    used.update(md.buffer for md in model.metadata or [])
    keep = sorted(used)
    remap = {old: new for new, old in enumerate(keep)}
    model.buffers = [model.buffers[i] for i in keep]
    for sg in model.subgraphs:
        for t in sg.tensors:
            t.buffer = remap[t.buffer]
    for md in model.metadata or []:
        md.buffer = remap[md.buffer]


def prune_opcodes(model: Any) -> None:
    """Drop operator codes no operator of any subgraph uses."""
    used = sorted({op.opcodeIndex for sg in model.subgraphs for op in sg.operators or []})
    remap = {old: new for new, old in enumerate(used)}
    model.operatorCodes = [model.operatorCodes[i] for i in used]
    for sg in model.subgraphs:
        for op in sg.operators or []:
            op.opcodeIndex = remap[op.opcodeIndex]


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


def quantization(scale: Any, zero_point: Any, *, axis: int = 0) -> Any:
    """A `QuantizationParametersT` with the given scales, zero points and channel axis."""
    q = tflite_io.schema().QuantizationParametersT()
    q.scale = np.asarray(scale, np.float32).ravel()
    q.zeroPoint = np.asarray(zero_point, np.int64).ravel()
    q.quantizedDimension = int(axis)
    return q


class Graph:
    """The main subgraph of `model`, edited in place.

    Operators live in `ops` (a list kept in execution order); `commit()` writes it back.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.sg = model.subgraphs[0]
        self.s = tflite_io.schema()
        self.ops: list[Any] = list(self.sg.operators or [])

    # ---- queries -----------------------------------------------------------------------------
    def op_type(self, op: Any) -> str:
        return tflite_io.op_name(self.model, op)

    def tensor(self, index: int) -> Any:
        return self.sg.tensors[index]

    def name(self, index: int) -> str:
        return tflite_io.tensor_name(self.sg.tensors[index])

    def constant(self, index: int) -> np.ndarray | None:
        """The data of a constant tensor, None for activations (and for index −1)."""
        return None if index < 0 else const_array(self.model, index)

    def is_constant(self, index: int) -> bool:
        """True if the tensor has data (cheap: no copy of the buffer)."""
        data = self.model.buffers[self.tensor(index).buffer].data
        return data is not None and len(data) > 0

    def is_float_activation(self, index: int) -> bool:
        return index >= 0 and self.tensor(index).type == 0 and not self.is_constant(index)

    def producers(self) -> dict[int, Any]:
        return {t: op for op in self.ops for t in op.outputs if t >= 0}

    def consumers(self) -> dict[int, list[Any]]:
        out: dict[int, list[Any]] = defaultdict(list)
        for op in self.ops:
            for t in op.inputs:
                if t >= 0:
                    out[int(t)].append(op)
        return out

    @property
    def inputs(self) -> list[int]:
        return [int(i) for i in self.sg.inputs]

    @property
    def outputs(self) -> list[int]:
        return [int(i) for i in self.sg.outputs]

    # ---- edits -------------------------------------------------------------------------------
    def add_tensor(
        self,
        name: str,
        shape: Any,
        type_code: int,
        *,
        quant: Any = None,
        data: np.ndarray | None = None,
        like: int | None = None,
    ) -> int:
        """Append a tensor (a constant when `data` is given) and return its index."""
        t = self.s.TensorT()
        t.name = name.encode()
        t.shape = np.asarray(shape, np.int32)
        t.type = type_code
        t.quantization = quant
        t.buffer = self._add_buffer(data) if data is not None else empty_buffer(self.model)
        if like is not None:
            src = self.tensor(like)
            t.shapeSignature = src.shapeSignature
            t.hasRank = src.hasRank
        self.sg.tensors.append(t)
        return len(self.sg.tensors) - 1

    def set_constant(self, index: int, data: np.ndarray, type_code: int, quant: Any) -> None:
        """Give tensor `index` new data, type and quantization in a fresh buffer."""
        t = self.tensor(index)
        t.type = type_code
        t.quantization = quant
        t.buffer = self._add_buffer(data)

    def _add_buffer(self, data: np.ndarray) -> int:
        return add_buffer(self.model, np.ascontiguousarray(data).tobytes())

    def new_op(self, op_type: str, inputs: list[int], outputs: list[int], version: int) -> Any:
        """A new operator (not yet placed in `ops`) with default options."""
        options = None
        if op_type in _OPTIONS:
            cls, field = _OPTIONS[op_type]
            options = (field, getattr(self.s, cls)())
        return make_op(
            self.model, op_type, inputs, outputs, version=version, options=options, exact=True
        )

    def opcode(self, op_type: str, version: int) -> int:
        """Index of the operator code (`op_type`, `version`), added if missing."""
        return opcode_index(self.model, op_type, version=version, exact=True)

    def set_version(self, op: Any, version: int) -> None:
        op.opcodeIndex = self.opcode(self.op_type(op), version)

    def replace_input(self, old: int, new: int, *, only: list[Any] | None = None) -> None:
        """Make consumers of tensor `old` (all, or those in `only`) read `new` instead."""
        _rewire(only if only is not None else self.ops, old, new)

    def commit(self) -> None:
        """Write the operator list back and drop unused tensors, buffers and opcodes."""
        self.sg.operators = self.ops
        prune_tensors(self.model)
        prune_buffers(self.model)
        prune_opcodes(self.model)
