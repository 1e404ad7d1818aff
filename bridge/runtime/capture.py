"""Intermediate tensors of ONNX Runtime and LiteRT, keyed by the float ONNX model's tensor names.

ORT exposes intermediate tensors as extra graph outputs. LiteRT keeps every tensor when built
with `preserve_all_tensors` (which also turns off the XNNPACK delegate, so each tensor is
computed by the interpreter's own kernels); a .tflite tensor is found through the lowering's
correspondence (or by the ONNX name itself), dequantized with its own scale and zero point, and
moved back to channel-first when the lowering made it channel-last.

When a shape fits both readings (a [1, 8, 8, 8] tensor with 8 channels on 8×8), neither the
shape nor a name found without the correspondence can tell the layout, and even a
correspondence entry can be stale (an output `bridge.lower.floating.output_order` transposed
back after the correspondence was located). The reading that matches the reference runtime's
value of the same ONNX tensor then decides (`layout_by_value`), as
`bridge.lower.floating.output_order` decides for outputs.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from bridge.contract import IOContract
from bridge.runtime import tflite_io
from bridge.runtime.metrics import sqnr_db
from bridge.runtime.runners import LiteRTRunner, OrtRunner

log = logging.getLogger(__name__)

#: A reading of a tensor whose shape hides its layout wins when its fit to the reference beats
#: the other reading's by this much: the right order fits at ≥ 30 dB even in int8 against float
#: ORT (≥ 100 dB against the QDQ model), the wrong one at ≈ 0 dB.
LAYOUT_MARGIN_DB = 10.0


def float_tensors(model: onnx.ModelProto) -> list[tuple[str, onnx.NodeProto]]:
    """(tensor, producing node) for every node output, in graph order, Constant nodes excluded."""
    return [
        (out, node)
        for node in model.graph.node
        if node.op_type != "Constant"
        for out in node.output
        if out
    ]


class OrtTensors:
    """ORT with `names` exposed; `run(feeds)` returns every one that is a float array.

    Args:
        model: the ONNX model.
        contract: its I/O contract.
        names: ONNX tensor name → the name to read in `model` (a QDQ model reads a quantized
            tensor at its DequantizeLinear output).
    """

    def __init__(
        self, model: onnx.ModelProto, contract: IOContract, names: Mapping[str, str]
    ) -> None:
        self.names = dict(names)
        self.runner = OrtRunner(model, contract, extra_outputs=sorted(set(self.names.values())))

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self.runner.run(feeds)
        out = {}
        for name, read in self.names.items():
            v = values.get(read)
            if v is not None and np.asarray(v).dtype.kind == "f":
                out[name] = np.asarray(v, np.float32)
        return out


@dataclass(frozen=True)
class TfliteValue:
    """A .tflite tensor read back as the ONNX tensor it holds.

    Attributes:
        value: float32, channel-first, dequantized.
        scale: the tensor's quantization step (None for float tensors).
    """

    value: np.ndarray
    scale: float | None


class TfliteTensors:
    """LiteRT with every tensor preserved; `run(feeds, shapes)` returns the mapped tensors.

    Args:
        model: the .tflite bytes or path.
        contract: the .tflite's own I/O contract.
        user_contract: the channel-first contract feeds are given in.
        correspondence: ONNX name → {"tflite", "channel_last", "fused"} from the lowering.
        names: the ONNX tensors wanted → the name of the ONNX node that writes each.

    LiteRT keeps variable tensors (an LSTM's state) from one run to the next; `state` names
    them, and `run` resets them before each sample.

    A tensor is looked up under its correspondence entry, then its own name, then the name
    onnx2tf gives a node's channel-last output (`<node>_output_nhwc`), which its own report
    misses when it dropped the channel-first copy. A layout the shape hides is decided once per
    tensor by value (`layout_by_value`), on the first sample that can tell.
    """

    def __init__(
        self,
        model: bytes | Path,
        contract: IOContract,
        *,
        user_contract: IOContract,
        correspondence: Mapping[str, Mapping[str, Any]],
        names: Mapping[str, str],
    ) -> None:
        with warnings.catch_warnings():  # LiteRT warns that preserving tensors costs memory
            warnings.simplefilter("ignore", UserWarning)
            self.runner = LiteRTRunner(
                model, contract, user_contract=user_contract, preserve_all_tensors=True
            )
        details = {d["name"]: d for d in self.runner.interpreter.get_tensor_details()}
        flat = _load(model)
        fused = fused_activation_outputs(flat)
        #: names of the variable tensors: state LiteRT carries from one run to the next
        self.state = variable_tensors(flat)
        self.found: dict[str, tuple[dict, bool | None]] = {}
        #: layouts decided by value: ONNX tensor → whether its .tflite tensor is channel-last
        self.decided: dict[str, bool] = {}
        for name, node in names.items():
            entry = correspondence.get(name) or {}
            if entry.get("fused"):
                continue  # its .tflite tensor holds a later ONNX tensor's values
            candidates = [(entry.get("tflite"), entry.get("channel_last"))]
            # by name only where no activation was fused in: that would hold a later tensor
            candidates += [
                (c, cl) for c, cl in ((name, None), (f"{node}_output_nhwc", True)) if c not in fused
            ]
            for candidate, channel_last in candidates:
                if candidate in details and _is_activation(details[candidate]):
                    self.found[name] = (details[candidate], channel_last)
                    break

    def run(
        self, feeds: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]
    ) -> dict[str, TfliteValue]:
        """Run one sample; `reference` holds another runtime's values of the ONNX tensors on it:
        their shapes undo channel-last layouts, their values decide the layouts shapes hide.

        Variable tensors (an LSTM's state) are reset first, so every sample starts from the
        zero state the ONNX model starts from.
        """
        interp = self.runner.interpreter
        if self.state:
            interp.reset_all_variables()
        self.runner.run(feeds)
        out: dict[str, TfliteValue] = {}
        for name, (detail, channel_last) in self.found.items():
            if name not in reference:
                continue
            try:
                raw = interp.get_tensor(detail["index"])
            except ValueError:  # not allocated: the tensor was never computed
                continue
            value, scale = dequantize(raw, detail)
            if value is None:
                continue
            value = self._channel_first(name, value, np.asarray(reference[name]), channel_last)
            if value is not None:
                out[name] = TfliteValue(value, scale)
        return out

    def _channel_first(
        self, name: str, value: np.ndarray, reference: np.ndarray, channel_last: bool | None
    ) -> np.ndarray | None:
        """`value` in the ONNX layout, the reading decided by value when the shape hides it."""
        if name not in self.decided:
            choice = layout_by_value(readings(value, reference.shape), reference)
            if choice is not None:
                self.decided[name] = choice
                if choice != channel_last:
                    log.info(
                        "tensor %r: its shape hides the layout; its .tflite tensor is read %s "
                        "by value (the lowering said %s)",
                        name,
                        "channel-last" if choice else "as is",
                        {None: "nothing", True: "channel-last", False: "as is"}[channel_last],
                    )
        return to_channel_first(value, reference.shape, self.decided.get(name, channel_last))


def _load(model: bytes | Path) -> Any:
    data = model if isinstance(model, bytes | bytearray) else Path(model).read_bytes()
    return tflite_io.load(bytes(data))


def variable_tensors(model: Any) -> list[str]:
    """Names of the variable tensors of a loaded .tflite model (e.g. an LSTM's state)."""
    return [
        tflite_io.tensor_name(t)
        for sg in model.subgraphs or []
        for t in sg.tensors or []
        if t.isVariable
    ]


def fused_activation_outputs(model: Any) -> set[str]:
    """Names of the tensors of a loaded .tflite model written by an operator with a fused
    activation."""
    sg = model.subgraphs[0]
    return {
        tflite_io.tensor_name(sg.tensors[i])
        for op in sg.operators or []
        if getattr(op.builtinOptions, "fusedActivationFunction", 0)
        for i in op.outputs
        if i >= 0
    }


def _is_activation(detail: dict) -> bool:
    return np.dtype(detail["dtype"]).kind in "fiu" and detail["dtype"] not in (np.int32, np.int64)


def dequantize(raw: np.ndarray, detail: dict) -> tuple[np.ndarray | None, float | None]:
    """float32 values of a tensor read from LiteRT and its per-tensor scale (None if float).

    Integer tensors without a single scale (per-channel or unquantized) give (None, None).
    """
    if raw.dtype.kind == "f":
        return raw.astype(np.float32), None
    q = detail.get("quantization_parameters") or {}
    scales = np.ravel(q.get("scales", []))
    zeros = np.ravel(q.get("zero_points", []))
    if scales.size != 1 or not scales[0]:
        return None, None
    zero = int(zeros[0]) if zeros.size else 0
    scale = float(scales[0])
    return ((raw.astype(np.float32) - zero) * scale).astype(np.float32), scale


def readings(value: np.ndarray, shape: Sequence[int]) -> dict[bool, np.ndarray]:
    """The ways `value` fits the ONNX `shape`: {False: as is, True: its last axis moved to
    axis 1 (channel-last to channel-first)}.

    A 4-D value with a size-1 axis 1 for a 3-D shape (a 1-D convolution lowered as 2-D,
    [N, 1, W, C]) is read without that axis.
    """
    shape = tuple(int(d) for d in shape)
    if value.ndim == len(shape) + 1 == 4 and value.shape[1] == 1:
        value = value[:, 0]
    out = {}
    if value.shape == shape:
        out[False] = value
    if value.ndim >= 3:
        perm = (0, value.ndim - 1, *range(1, value.ndim - 1))
        if tuple(value.shape[p] for p in perm) == shape:
            out[True] = np.transpose(value, perm)
    return out


def to_channel_first(
    value: np.ndarray, shape: Sequence[int], channel_last: bool | None
) -> np.ndarray | None:
    """`value` in the ONNX layout of `shape` (see `readings`).

    `channel_last` decides when both readings fit the shape; None means unknown, and then an
    exact shape match wins. Returns None if neither fits.
    """
    fits = readings(value, shape)
    if channel_last in fits:
        return fits[channel_last]
    return fits.get(False, fits.get(True))


def layout_by_value(fits: Mapping[bool, np.ndarray], reference: np.ndarray) -> bool | None:
    """Which of two `readings` holds `reference` (the same ONNX tensor from another runtime).

    A reading scores its SQNR against `reference` after an affine fit per channel (axis 1), so
    channels scaled by equalization (the .tflite holds x_c / t_c) or by a planted fault still
    show their order. One wins only by `LAYOUT_MARGIN_DB`. None when fewer than two readings
    fit, both hold the same data, or neither wins (a constant tensor cannot tell).
    """
    if len(fits) < 2 or np.array_equal(fits[False], fits[True]):
        return None
    score = {cl: _affine_fit_db(reference, v) for cl, v in fits.items()}
    if abs(score[True] - score[False]) < LAYOUT_MARGIN_DB:
        return None
    return score[True] > score[False]


def _affine_fit_db(reference: np.ndarray, value: np.ndarray) -> float:
    """SQNR of `reference` against the best per-channel a·value + b (channels on axis 1)."""
    ref = np.moveaxis(np.asarray(reference, np.float64), 1, 0).reshape(reference.shape[1], -1)
    val = np.moveaxis(np.asarray(value, np.float64), 1, 0).reshape(value.shape[1], -1)
    ref = ref - ref.mean(axis=1, keepdims=True)
    val = val - val.mean(axis=1, keepdims=True)
    power = np.sum(val * val, axis=1, keepdims=True)
    gain = np.divide(
        np.sum(ref * val, axis=1, keepdims=True), power, where=power > 0, out=np.zeros_like(power)
    )
    return sqnr_db(ref, gain * val)
