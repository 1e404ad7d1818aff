"""A small editor for the main subgraph of a TFLite `ModelT`: look up producers and consumers,
add tensors, constants and operators, rewire, and prune what became unused."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from bridge.runtime import tflite_io

#: Option tables of the operators the lowering creates: name → (options class, union field).
_OPTIONS = {
    "QUANTIZE": ("QuantizeOptionsT", "QuantizeOptions"),
    "DEQUANTIZE": ("DequantizeOptionsT", "DequantizeOptions"),
    "RESHAPE": ("ReshapeOptionsT", "ReshapeOptions"),
    "FULLY_CONNECTED": ("FullyConnectedOptionsT", "FullyConnectedOptions"),
}


class Graph:
    """The main subgraph of `model`, edited in place.

    Operators live in `ops` (a list kept in execution order); `commit()` writes it back.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.sg = model.subgraphs[0]
        self.s = tflite_io.schema()
        self.ops: list[Any] = list(self.sg.operators or [])
        self._names = tflite_io.builtin_names()

    # ---- queries -----------------------------------------------------------------------------
    def op_type(self, op: Any) -> str:
        return tflite_io.op_name(self.model, op)

    def tensor(self, index: int) -> Any:
        return self.sg.tensors[index]

    def name(self, index: int) -> str:
        return tflite_io.tensor_name(self.sg.tensors[index])

    def constant(self, index: int) -> np.ndarray | None:
        """The data of a constant tensor, None for activations (and for index −1)."""
        if index < 0:
            return None
        return tflite_io.buffer_array(self.model, self.sg.tensors[index])

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
        t.buffer = self._add_buffer(data) if data is not None else 0
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
        buf = self.s.BufferT()
        buf.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
        self.model.buffers.append(buf)
        return len(self.model.buffers) - 1

    def new_op(self, op_type: str, inputs: list[int], outputs: list[int], version: int) -> Any:
        """A new operator (not yet placed in `ops`) with default options."""
        op = self.s.OperatorT()
        op.opcodeIndex = self.opcode(op_type, version)
        op.inputs = np.asarray(inputs, np.int32)
        op.outputs = np.asarray(outputs, np.int32)
        if op_type in _OPTIONS:
            cls, field = _OPTIONS[op_type]
            op.builtinOptionsType = getattr(self.s.BuiltinOptions, field)
            op.builtinOptions = getattr(self.s, cls)()
        return op

    def opcode(self, op_type: str, version: int) -> int:
        """Index of the operator code (`op_type`, `version`), added if missing."""
        code = getattr(self.s.BuiltinOperator, op_type)
        for i, c in enumerate(self.model.operatorCodes):
            if max(c.builtinCode, c.deprecatedBuiltinCode) == code and c.version == version:
                return i
        c = self.s.OperatorCodeT()
        c.builtinCode = code
        c.deprecatedBuiltinCode = min(code, 127)
        c.version = version
        self.model.operatorCodes.append(c)
        return len(self.model.operatorCodes) - 1

    def set_version(self, op: Any, version: int) -> None:
        op.opcodeIndex = self.opcode(self.op_type(op), version)

    def replace_input(self, old: int, new: int, *, only: list[Any] | None = None) -> None:
        """Make consumers of tensor `old` (all, or those in `only`) read `new` instead."""
        for op in only if only is not None else self.ops:
            op.inputs = np.asarray([new if t == old else t for t in op.inputs], np.int32)

    def commit(self) -> None:
        """Write the operator list back and drop unused tensors, buffers and opcodes."""
        self.sg.operators = self.ops
        self._prune()

    def _prune(self) -> None:
        sg, model = self.sg, self.model
        used = set(self.inputs) | set(self.outputs)
        for op in self.ops:
            used.update(int(t) for t in op.inputs if t >= 0)
            used.update(int(t) for t in op.outputs if t >= 0)
            if op.intermediates is not None:
                used.update(int(t) for t in op.intermediates if t >= 0)
        keep = sorted(used)
        remap = {old: new for new, old in enumerate(keep)}

        def m(arr: Any) -> np.ndarray:
            return np.asarray([remap[int(t)] if t >= 0 else -1 for t in arr], np.int32)

        sg.tensors = [sg.tensors[i] for i in keep]
        for op in self.ops:
            op.inputs, op.outputs = m(op.inputs), m(op.outputs)
            if op.intermediates is not None:
                op.intermediates = m(op.intermediates)
        sg.inputs, sg.outputs = m(sg.inputs), m(sg.outputs)
        for sig in model.signatureDefs or []:
            for t in list(sig.inputs or []) + list(sig.outputs or []):
                t.tensorIndex = remap[int(t.tensorIndex)]
        self._prune_buffers()
        self._prune_opcodes()

    def _prune_buffers(self) -> None:
        model = self.model
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

    def _prune_opcodes(self) -> None:
        model = self.model
        used = sorted({op.opcodeIndex for sg in model.subgraphs for op in sg.operators or []})
        remap = {old: new for new, old in enumerate(used)}
        model.operatorCodes = [model.operatorCodes[i] for i in used]
        for sg in model.subgraphs:
            for op in sg.operators or []:
                op.opcodeIndex = remap[op.opcodeIndex]


def quantization(scale: Any, zero_point: Any, *, axis: int = 0) -> Any:
    """A `QuantizationParametersT` with the given scales, zero points and channel axis."""
    q = tflite_io.schema().QuantizationParametersT()
    q.scale = np.asarray(scale, np.float32).ravel()
    q.zeroPoint = np.asarray(zero_point, np.int64).ravel()
    q.quantizedDimension = int(axis)
    return q
