"""Scale and zero-point maths, written once: observers, weights, biases, lowering and runtimes.

`QParams` is the one quantization-parameter type; every stage quantizes and dequantizes
through it, so the rounding is the same everywhere.

Affine quantization maps a real value r to an integer q = clamp(round(r / s) + z, qmin, qmax)
and back with r ≈ (q − z)·s. Following TFLite's calibrator:

- the range [lo, hi] is first widened to include 0, so that 0.0 is exactly representable
  (z is an integer, and padding or ReLU zeros must stay exact);
- asymmetric: s = (hi − lo) / (qmax − qmin), z = round(qmin − lo / s) clamped to [qmin, qmax];
- symmetric: z = 0, s = max(|lo|, |hi|) / qmax. Weights use the narrow int8 range [−127, 127]
  (TFLite requires it for per-channel filters) and int16 activations (TFLite 16x8) are
  symmetric with z = 0;
- a degenerate range (hi == lo == 0) gets the tiny scale `MIN_SCALE` instead of 0.

Scales are float32, as they are stored in ONNX and TFLite; rounding is half to even, as in ONNX
QuantizeLinear.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bridge.errors import ConfigError

#: Integer ranges (qmin, qmax) of the storage types we quantize to.
QRANGES: dict[str, tuple[int, int]] = {
    "int8": (-128, 127),
    "uint8": (0, 255),
    "int16": (-32768, 32767),
    "uint16": (0, 65535),
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
}

#: Smallest scale handed out, for constant or all-zero tensors (float32 machine epsilon).
MIN_SCALE = float(np.finfo(np.float32).eps)


def qrange(dtype: str, *, narrow: bool = False) -> tuple[int, int]:
    """(qmin, qmax) of `dtype`; `narrow` drops the most negative value (int8 → [−127, 127])."""
    try:
        qmin, qmax = QRANGES[dtype]
    except KeyError:
        raise ConfigError(
            f"unknown quantized dtype {dtype!r}; choose one of: {', '.join(QRANGES)}"
        ) from None
    if narrow and qmin < 0:
        qmin += 1
    return qmin, qmax


def affine_qparams(
    lo: float | np.ndarray,
    hi: float | np.ndarray,
    *,
    dtype: str = "int8",
    symmetric: bool = False,
    narrow: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero point that cover [lo, hi] (per element, for per-channel ranges).

    Args:
        lo: lower bound(s) of the real range.
        hi: upper bound(s) of the real range.
        dtype: the integer storage type ("int8", "uint8", "int16", "int32").
        symmetric: zero point 0 and a range symmetric around 0.
        narrow: use [qmin + 1, qmax] (symmetric int8 weights: [−127, 127]).

    Returns:
        (scale as float32, zero point as `dtype`), both shaped like `lo`/`hi` broadcast.
    """
    qmin, qmax = qrange(dtype, narrow=narrow)
    lo64 = np.minimum(np.asarray(lo, np.float64), 0.0)
    hi64 = np.maximum(np.asarray(hi, np.float64), 0.0)
    if not (np.all(np.isfinite(lo64)) and np.all(np.isfinite(hi64))):
        raise ConfigError(f"cannot quantize a non-finite range [{lo}, {hi}]")
    if symmetric and qmin < 0:
        amax = np.maximum(-lo64, hi64)
        scale = np.maximum((amax / qmax).astype(np.float32), np.float32(MIN_SCALE))
        zero = np.zeros(scale.shape, dtype=dtype)
        return scale, zero
    scale = np.maximum(((hi64 - lo64) / (qmax - qmin)).astype(np.float32), np.float32(MIN_SCALE))
    zero = np.clip(np.rint(qmin - lo64 / scale.astype(np.float64)), qmin, qmax)
    return scale, zero.astype(dtype)


def _along(param: np.ndarray, ndim: int, axis: int | None) -> np.ndarray:
    """Reshape a parameter to broadcast along `axis` of an ndim-array (a scalar if per tensor)."""
    if axis is None or param.size == 1:
        return param.reshape(())
    shape = [1] * ndim
    shape[axis % ndim] = param.size
    return param.reshape(shape)


@dataclass(frozen=True)
class QParams:
    """Quantization parameters of one tensor: real = (q − zero_point) · scale.

    Attributes:
        scale: float32 scales, one per tensor or one per channel along `axis` (1-D).
        zero_point: int64 zero points, same length as `scale`.
        dtype: the integer storage type ("int8", "uint8", "int16", "int32", "int64", ...).
        axis: the channel axis of per-channel parameters, else None.
        narrow: quantize into [qmin + 1, qmax] (symmetric int8 weights: [−127, 127]).
    """

    scale: np.ndarray
    zero_point: np.ndarray
    dtype: str
    axis: int | None = None
    narrow: bool = False

    def __post_init__(self) -> None:
        scale = np.atleast_1d(np.asarray(self.scale, np.float32)).ravel()
        zero = np.atleast_1d(np.asarray(self.zero_point, np.int64)).ravel()
        if zero.size == 1 and scale.size > 1:
            zero = np.repeat(zero, scale.size)
        if zero.size != scale.size:
            raise ConfigError(f"{scale.size} scales but {zero.size} zero points")
        qrange(self.dtype)  # validates the dtype
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "zero_point", zero)

    @classmethod
    def from_range(
        cls, lo: Any, hi: Any, *, dtype: str = "int8", symmetric: bool = False
    ) -> QParams:
        """Per-tensor parameters covering [lo, hi] and 0 (`affine_qparams`)."""
        scale, zero = affine_qparams(lo, hi, dtype=dtype, symmetric=symmetric)
        return cls(scale, zero, dtype)

    @classmethod
    def symmetric_weights(
        cls, lo: np.ndarray, hi: np.ndarray, axis: int | None, dtype: str = "int8"
    ) -> QParams:
        """Symmetric narrow-range parameters (zero point 0) for per-channel ranges [lo, hi]."""
        scale, zero = affine_qparams(lo, hi, dtype=dtype, symmetric=True, narrow=True)
        return cls(scale, zero, dtype, axis, narrow=True)

    @property
    def qmin(self) -> int:
        return qrange(self.dtype, narrow=self.narrow)[0]

    @property
    def qmax(self) -> int:
        return qrange(self.dtype, narrow=self.narrow)[1]

    @property
    def per_channel(self) -> bool:
        return self.axis is not None and self.scale.size > 1

    def steps(self, x: np.ndarray) -> np.ndarray:
        """x / scale, unrounded, in x's precision (float32 x: as ONNX QuantizeLinear does)."""
        x = np.asarray(x)
        return x / _along(self.scale, x.ndim, self.axis)

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """clamp(round_half_even(x / scale) + zero_point, qmin, qmax) as `dtype`."""
        x = np.asarray(x)
        q = np.rint(self.steps(x)) + _along(self.zero_point, x.ndim, self.axis)
        # int64's max is no float64: clip to the largest float64 below it (2**63 − 1024)
        hi = np.nextafter(float(self.qmax) + 1.0, 0.0) if self.qmax > 2**53 else self.qmax
        return np.clip(q, self.qmin, hi).astype(self.dtype)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        """(q − zero_point) · scale, as float32 (exact product in float64, rounded once)."""
        q = np.asarray(q)
        z = _along(self.zero_point, q.ndim, self.axis)
        return ((q.astype(np.int64) - z) * _along(self.scale, q.ndim, self.axis)).astype(
            np.float32
        )

    def fake_quantize(self, x: np.ndarray) -> np.ndarray:
        """dequantize(quantize(x)): the value a QDQ pair lets through."""
        return self.dequantize(self.quantize(x))

    def to_dict(self) -> dict[str, Any]:
        return {
            "scale": [float(s) for s in self.scale],
            "zero_point": [int(z) for z in self.zero_point],
            "dtype": self.dtype,
            "axis": self.axis,
        }
