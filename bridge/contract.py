"""The I/O contract: names, order, shapes, dtypes and layouts as the PyTorch user sees them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from bridge.errors import ShapeError

#: Layout names. "NCHW"-style layouts are channel-first image/volume tensors; "plain" is anything
#: that must never be transposed (for example [batch, time, features]).
CHANNEL_FIRST = {3: "NCW", 4: "NCHW", 5: "NCDHW"}
CHANNEL_LAST = {3: "NWC", 4: "NHWC", 5: "NDHWC"}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor. `shape` uses None for a symbolic (dynamic) dimension."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str
    layout: str = "plain"

    @property
    def rank(self) -> int:
        return len(self.shape)

    def concrete_shape(self, batch: int = 1) -> tuple[int, ...]:
        """The shape with symbolic dimensions replaced by `batch`."""
        return tuple(batch if d is None else d for d in self.shape)

    def to_nhwc(self) -> TensorSpec:
        """This spec as seen with its channel axis moved last (only for channel-first layouts)."""
        if self.layout not in CHANNEL_FIRST.values():
            return self
        shape = (self.shape[0], *self.shape[2:], self.shape[1])
        return replace(self, shape=shape, layout=CHANNEL_LAST[self.rank])

    def check(self, array: np.ndarray, *, where: str = "input") -> None:
        """Raise ShapeError if `array` does not fit this spec."""
        if array.ndim != self.rank:
            raise ShapeError(
                f"{where} {self.name!r}: expected rank {self.rank} {self.shape}, "
                f"got shape {tuple(array.shape)}"
            )
        for want, got in zip(self.shape, array.shape, strict=True):
            if want is not None and want != got:
                raise ShapeError(
                    f"{where} {self.name!r}: expected shape {self.shape}, got {tuple(array.shape)}"
                )
        if np.dtype(array.dtype) != np.dtype(self.dtype):
            raise ShapeError(
                f"{where} {self.name!r}: expected dtype {self.dtype}, got {array.dtype}; "
                f"cast the data with .astype({self.dtype!r})"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "layout": self.layout,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TensorSpec:
        return cls(d["name"], tuple(d["shape"]), d["dtype"], d.get("layout", "plain"))


@dataclass(frozen=True)
class IOContract:
    """Inputs and outputs in order. `nhwc` says whether image tensors are channel-last."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    nhwc: bool = False
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def check_feeds(self, feeds: Mapping[str, np.ndarray]) -> None:
        """Raise ShapeError unless `feeds` has exactly the contract's inputs with fitting data."""
        missing = [n for n in self.input_names if n not in feeds]
        extra = [n for n in feeds if n not in self.input_names]
        if missing or extra:
            raise ShapeError(
                f"inputs do not match the contract: missing {missing}, unexpected {extra}; "
                f"expected {self.input_names}"
            )
        for spec in self.inputs:
            spec.check(np.asarray(feeds[spec.name]))

    def as_nhwc(self) -> IOContract:
        """The contract a user sees with `nhwc_inputs=True`."""
        return IOContract(
            tuple(t.to_nhwc() for t in self.inputs),
            tuple(t.to_nhwc() for t in self.outputs),
            nhwc=True,
            extra=dict(self.extra),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "nhwc": self.nhwc,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> IOContract:
        return cls(
            tuple(TensorSpec.from_dict(t) for t in d["inputs"]),
            tuple(TensorSpec.from_dict(t) for t in d["outputs"]),
            nhwc=bool(d.get("nhwc", False)),
        )


def guess_layout(shape: Sequence[int | None], *, image_channels: int = 64) -> str:
    """Call a tensor channel-first only when it looks like an image batch: 4-D or 5-D.

    3-D tensors are treated as plain ([batch, time, features]) unless the user says otherwise,
    since guessing NCW for a sequence silently transposes it.
    """
    if len(shape) in (4, 5):
        return CHANNEL_FIRST[len(shape)]
    return "plain"


def to_layout(array: np.ndarray, spec: TensorSpec, target: TensorSpec) -> np.ndarray:
    """Transpose `array` from `spec`'s layout to `target`'s (channel-first ⇄ channel-last)."""
    if spec.layout == target.layout:
        return array
    rank = array.ndim
    if spec.layout == CHANNEL_FIRST.get(rank) and target.layout == CHANNEL_LAST.get(rank):
        return np.moveaxis(array, 1, -1)
    if spec.layout == CHANNEL_LAST.get(rank) and target.layout == CHANNEL_FIRST.get(rank):
        return np.moveaxis(array, -1, 1)
    raise ShapeError(f"cannot convert {spec.name!r} from {spec.layout} to {target.layout}")
