"""Scale and zero-point maths, written once for every observer, weight and bias.

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

import numpy as np

from bridge.errors import ConfigError

#: Integer ranges (qmin, qmax) of the storage types we quantize to.
QRANGES: dict[str, tuple[int, int]] = {
    "int8": (-128, 127),
    "uint8": (0, 255),
    "int16": (-32768, 32767),
    "int32": (-(2**31), 2**31 - 1),
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
    """Reshape a per-channel parameter to broadcast along `axis` of an ndim-array."""
    param = np.asarray(param)
    if axis is None or param.ndim == 0:
        return param
    shape = [1] * ndim
    shape[axis] = param.size
    return param.reshape(shape)


def quantize(
    x: np.ndarray,
    scale: np.ndarray | float,
    zero_point: np.ndarray | int,
    dtype: str = "int8",
    axis: int | None = None,
) -> np.ndarray:
    """ONNX QuantizeLinear in numpy: clamp(round_half_even(x / scale) + zero_point)."""
    x = np.asarray(x)
    qmin, qmax = qrange(dtype)
    s = _along(np.asarray(scale, np.float32), x.ndim, axis)
    z = _along(np.asarray(zero_point, np.int64), x.ndim, axis)
    q = np.rint(x / s) + z
    return np.clip(q, qmin, qmax).astype(dtype)


def dequantize(
    q: np.ndarray,
    scale: np.ndarray | float,
    zero_point: np.ndarray | int,
    axis: int | None = None,
) -> np.ndarray:
    """ONNX DequantizeLinear in numpy: (q − zero_point)·scale, as float32."""
    q = np.asarray(q)
    s = _along(np.asarray(scale, np.float32), q.ndim, axis)
    z = _along(np.asarray(zero_point, np.int64), q.ndim, axis)
    return ((q.astype(np.int64) - z) * s).astype(np.float32)


def fake_quantize(
    x: np.ndarray,
    scale: np.ndarray | float,
    zero_point: np.ndarray | int,
    dtype: str = "int8",
    axis: int | None = None,
) -> np.ndarray:
    """dequantize(quantize(x)): the value a QDQ pair lets through."""
    return dequantize(quantize(x, scale, zero_point, dtype, axis), scale, zero_point, axis)
