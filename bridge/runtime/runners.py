"""Runtimes behind one interface: `run(feeds) -> {output name: array}`, in contract order.

Feeds and outputs are always in the contract's own layout; a runner whose model uses another
layout (an NHWC .tflite) converts at its boundary.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import onnx

from bridge.contract import IOContract, to_layout
from bridge.errors import BridgeError, LoweringError, ModelLoadError, ShapeError
from bridge.qparams import QParams
from bridge.runtime import sandbox

log = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]


class Runner(Protocol):
    """One runtime holding one model."""

    name: str
    contract: IOContract

    def run(self, feeds: Mapping[str, np.ndarray]) -> Arrays: ...


class TorchRunner:
    """Runs the original torch.nn.Module; positional inputs follow the contract's order."""

    name = "torch"

    def __init__(self, module: object, contract: IOContract) -> None:
        self.module = module
        self.contract = contract

    def run(self, feeds: Mapping[str, np.ndarray]) -> Arrays:
        import torch

        self.contract.check_feeds(feeds)
        args = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in self.contract.input_names]
        with torch.inference_mode():
            out = self.module(*args)  # type: ignore[operator]
        flat = _flatten_outputs(out)
        if len(flat) != len(self.contract.outputs):
            raise ShapeError(
                f"the model returned {len(flat)} outputs, the contract has "
                f"{len(self.contract.outputs)}: {self.contract.output_names}"
            )
        return {
            s.name: t.detach().cpu().numpy()
            for s, t in zip(self.contract.outputs, flat, strict=True)
        }


def _flatten_outputs(out: object) -> list:
    if isinstance(out, dict):
        return [t for v in out.values() for t in _flatten_outputs(v)]
    if isinstance(out, list | tuple):
        return [t for v in out for t in _flatten_outputs(v)]
    return [out]


class OrtRunner:
    """ONNX Runtime on the CPU, with graph optimisations off so the graph runs as written.

    Args:
        model: an ONNX model.
        contract: its I/O contract.
        extra_outputs: intermediate tensor names to expose as outputs too.
    """

    name = "ort"

    def __init__(
        self,
        model: onnx.ModelProto,
        contract: IOContract,
        *,
        extra_outputs: Sequence[str] = (),
    ) -> None:
        import onnxruntime as ort

        self.contract = contract
        if extra_outputs:
            model = expose_outputs(model, extra_outputs)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        opts.log_severity_level = 3
        opts.intra_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime raises its own untyped errors
            raise ModelLoadError(f"ONNX Runtime cannot load the model: {e}") from e
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: Mapping[str, np.ndarray]) -> Arrays:
        self.contract.check_feeds(feeds)
        values = self.session.run(None, {k: np.asarray(v) for k, v in feeds.items()})
        return dict(zip(self.output_names, values, strict=True))


def expose_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of `model` whose graph outputs also include the tensors `names` (untyped)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    have = {o.name for o in copy.graph.output}
    for n in names:
        if n not in have:
            copy.graph.output.append(onnx.ValueInfoProto(name=n))
            have.add(n)
    return copy


class LiteRTRunner:
    """The LiteRT interpreter on a .tflite file or bytes.

    The .tflite's inputs and outputs follow `contract` (NHWC images when `contract.nhwc`);
    feeds and results are in `user_contract`'s layout, converted at the boundary.

    Each model (and each new input shape) runs first in a child process (`sandbox.probe`), so a
    native LiteRT crash raises RuntimeCrashError naming the op instead of killing the process.
    """

    name = "litert"

    def __init__(
        self,
        model: bytes | Path,
        contract: IOContract,
        *,
        user_contract: IOContract | None = None,
        num_threads: int = 1,
        preserve_all_tensors: bool = False,
    ) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.contract = user_contract or contract
        self.tflite_contract = contract
        self._model = model
        self._options = sandbox.Options(num_threads, preserve_all_tensors)
        self._probed: set[tuple] = set()  # input shapes probed in a child besides the declared
        sandbox.probe(model, self._options)
        kwargs: dict = {
            "num_threads": num_threads,
            "experimental_preserve_all_tensors": preserve_all_tensors,
        }
        try:
            if isinstance(model, bytes | bytearray):
                self.interpreter = Interpreter(model_content=bytes(model), **kwargs)
            else:
                self.interpreter = Interpreter(model_path=str(model), **kwargs)
            self.interpreter.allocate_tensors()
            inputs = self.interpreter.get_input_details()
            outputs = self.interpreter.get_output_details()
        except Exception as e:  # ValueError/RuntimeError with C++ text, UnicodeDecodeError, ...
            raise ModelLoadError(f"LiteRT cannot load the .tflite model: {e}") from e
        self._inputs = _by_name(inputs, contract.inputs, "input")
        self._outputs = _by_name(outputs, contract.outputs, "output")

    def run(self, feeds: Mapping[str, np.ndarray]) -> Arrays:
        """Run once; LoweringError if LiteRT fails (the .tflite cannot run on these shapes)."""
        self.contract.check_feeds(feeds)
        try:
            return self._run(feeds)
        except BridgeError:
            raise
        except Exception as e:  # the interpreter raises RuntimeError/ValueError with C++ text
            shapes = {k: list(np.shape(v)) for k, v in feeds.items()}
            raise LoweringError(
                f"LiteRT fails to run the .tflite on inputs {shapes}: {e}. The .tflite is not "
                "usable as lowered; please report it with the model"
            ) from e

    def _run(self, feeds: Mapping[str, np.ndarray]) -> Arrays:
        interp = self.interpreter
        values = {
            detail["index"]: _quantize_io(
                to_layout(np.asarray(feeds[user.name]), user, spec), detail
            )
            for user, spec, detail in zip(
                self.contract.inputs, self.tflite_contract.inputs, self._inputs, strict=True
            )
        }
        resized = [d for d in self._inputs if tuple(d["shape"]) != values[d["index"]].shape]
        shapes = tuple(v.shape for v in values.values())
        if resized and shapes not in self._probed:  # new shapes run new kernel code
            sandbox.probe(self._model, self._options, feeds=[values])
            self._probed.add(shapes)
        for detail in resized:
            interp.resize_tensor_input(detail["index"], list(values[detail["index"]].shape))
        if resized:
            interp.allocate_tensors()
        for index, value in values.items():
            interp.set_tensor(index, value)
        # variable tensors (an LSTM's state) carry over between runs; every sample starts
        # from the zero state the torch and ONNX models start from
        interp.reset_all_variables()
        interp.invoke()
        out: Arrays = {}
        for user_spec, spec, detail in zip(
            self.contract.outputs, self.tflite_contract.outputs, self._outputs, strict=True
        ):
            y = _dequantize_io(interp.get_tensor(detail["index"]), detail)
            out[user_spec.name] = to_layout(y, spec, user_spec)
        return out


def _by_name(details: list[dict], specs: Sequence, kind: str) -> list[dict]:
    """Order interpreter I/O details as the contract lists them (by name, else by position)."""
    by_name = {d["name"]: d for d in details}
    if all(s.name in by_name for s in specs):
        return [by_name[s.name] for s in specs]
    if len(details) != len(specs):
        raise ModelLoadError(
            f"the .tflite has {len(details)} {kind}s, the contract has {len(specs)}: "
            f"{[s.name for s in specs]}"
        )
    log.warning(
        "tflite %s names %s differ from the contract; matching by position",
        kind,
        [d["name"] for d in details],
    )
    return list(details)


def _io_qparams(detail: dict) -> QParams:
    """The per-tensor parameters LiteRT reports for an integer model input or output."""
    scale, zero = detail["quantization"]
    return QParams(scale, zero, np.dtype(detail["dtype"]).name)


def _quantize_io(x: np.ndarray, detail: dict) -> np.ndarray:
    dtype = detail["dtype"]
    if np.dtype(dtype).kind in "iu" and np.asarray(x).dtype.kind == "f":
        return _io_qparams(detail).quantize(x)
    return np.asarray(x, dtype=dtype)


def _dequantize_io(y: np.ndarray, detail: dict) -> np.ndarray:
    if np.dtype(detail["dtype"]).kind in "iu" and detail["quantization"][0]:
        return _io_qparams(detail).dequantize(y)
    return y
