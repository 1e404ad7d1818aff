"""Refuse calibration data whose float inputs carry no range.

Ranges calibrated on an input that never varies describe nothing the deployed model will see.
They used to pass calibration and fail late, at the parity check, with no word on the cause.
What is refused, and what is not:

- a float input that is exactly zero in every element of every sample: refused, whatever it
  is. Its range is empty, so every non-zero value it later receives quantizes to 0 (an
  additive mask or a recurrent state that is always zero is better a constant in the model);
- a float input that feeds a convolution (directly, or through at most `HOPS` ops whose other
  inputs are constants: normalisation, transpose, pad, ...) and holds one value across the
  whole set: refused. An image batch filled with one value is not representative data;
- a constant non-zero float input that feeds no convolution (an attention mask of ones, a
  scale): kept. Its range [0, c] holds both 0 and c exactly, and a 4-D mask of ones must not
  be taken for an image because of its rank;
- integer and bool inputs (token ids, 0/1 masks, indices): never refused; they are not
  quantized from a range.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

import numpy as np
import onnx

from bridge.contract import IOContract
from bridge.errors import CalibrationError

#: How many constant-operand ops (Sub, Div, Transpose, Pad, ...) may sit between an input and
#: the convolution that makes it an image.
HOPS = 4
CONVOLUTIONS = frozenset({"Conv", "ConvTranspose"})


class InputRanges:
    """Each float input's smallest and largest value over the calibration samples."""

    def __init__(self, contract: IOContract) -> None:
        self.names = [s.name for s in contract.inputs if np.dtype(s.dtype).kind == "f"]
        self.lo = dict.fromkeys(self.names, np.inf)
        self.hi = dict.fromkeys(self.names, -np.inf)
        self.samples = 0

    def update(self, feeds: Mapping[str, np.ndarray]) -> None:
        """Add one sample ({input name: array}, already checked finite)."""
        self.samples += 1
        for name in self.names:
            x = feeds.get(name)
            if x is not None and x.size:
                self.lo[name] = min(self.lo[name], float(x.min()))
                self.hi[name] = max(self.hi[name], float(x.max()))

    def check(self, model: onnx.ModelProto) -> None:
        """Raise for the inputs the module docstring refuses, naming every one of them.

        Raises:
            CalibrationError: naming the input, the sample count and what data to give.
        """
        n = self.samples
        problems = []
        for name in self.names:
            lo, hi = self.lo[name], self.hi[name]
            if lo == hi == 0.0:
                problems.append(
                    f"calibration input {name!r} is zero in every element of all {n} samples: "
                    "its quantization range is empty, so every non-zero value would quantize "
                    "to 0. Calibrate on representative data, as the deployed model receives "
                    "it; an input that is always zero is better a constant in the model"
                )
            elif lo == hi and (conv := feeding_convolution(model, name)) is not None:
                problems.append(
                    f"calibration input {name!r} feeds convolution {conv!r} but holds the "
                    f"single value {lo:g} in every element of all {n} samples, so its ranges "
                    "describe no real image. Calibrate on representative data (real images, "
                    "preprocessed as at deployment), not a constant fill"
                )
        if problems:
            raise CalibrationError("; ".join(problems))


def feeding_convolution(model: onnx.ModelProto, name: str) -> str | None:
    """The name of a Conv that `name` reaches through constant-operand ops, else None."""
    constants = {t.name for t in model.graph.initializer}
    readers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in model.graph.node:
        if node.op_type == "Constant":
            constants.update(node.output)
        for i in node.input:
            readers[i].append(node)
    frontier = {name}
    for _ in range(HOPS + 1):
        reached: set[str] = set()
        for value in frontier:
            for node in readers.get(value, ()):
                if node.op_type in CONVOLUTIONS:
                    return node.name or node.output[0]
                if all(i in constants or i == value or not i for i in node.input):
                    reached.update(node.output)
        frontier = reached
    return None
